"""The progress bar of the commands that answer or judge question by question."""

from __future__ import annotations

from tqdm.auto import tqdm


def progress_bar(total: int, desc: str, *, show: bool = True) -> tqdm:
    """A tqdm bar counting questions; ``show=False`` hides it.

    ``disable`` is passed only to hide: tqdm reads its environment switches (``TQDM_DISABLE=1`` and
    the other ``TQDM_*`` variables) only for arguments not given, so an explicit ``disable=False``
    would override a user's ``TQDM_DISABLE``.
    """
    return tqdm(total=total, desc=desc, unit="q", **({} if show else {"disable": True}))
