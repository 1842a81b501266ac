"""``python -m medvlm`` (also what ``torchrun -m medvlm`` runs)."""

from medvlm.cli import main

raise SystemExit(main())
