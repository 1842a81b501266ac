"""Helpers for the serving tests: images as data URLs, a server on the loopback interface."""

from __future__ import annotations

import base64
import io

from PIL import Image

from medvlm.eval.generation import Generator
from medvlm.serve.server import ServerThread, ServeSettings, build_app


def png_data_url(size: tuple[int, int] = (24, 40), colour: tuple[int, int, int] = (200, 30, 30)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def start(generator: Generator, **settings) -> tuple[ServerThread, object]:
    """A server for ``generator`` (served name ``micro``) and its engine; enter the first, close the second."""
    app, engine = build_app(generator, ServeSettings(model="micro", default_max_tokens=8, **settings))
    return ServerThread(app), engine
