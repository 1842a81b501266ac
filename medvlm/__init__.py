"""medvlm: adapt LLaVA-family vision-language models to biomedicine, and measure what it costs."""

__version__ = "0.1.0"
