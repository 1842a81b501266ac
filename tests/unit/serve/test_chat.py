"""``medvlm chat`` in a pseudo-terminal, and the conversation state behind it."""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
from pathlib import Path

import pexpect
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from medvlm.data.records import Turn
from medvlm.errors import OutputError
from medvlm.eval.generation import GenerationItem
from medvlm.serve.chat import ChatSession, _command
from medvlm.serve.protocol import conversation_sample

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    Image.new("RGB", (30, 20), (10, 120, 200)).save(tmp_path / "photo.png")
    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "CT.dcm")
    return tmp_path


def test_session_keeps_the_conversation(micro_generator, images: Path) -> None:
    session = ChatSession(micro_generator, max_new_tokens=6)
    assert session.set_image(images / "photo.png") == "image 30x20"
    pieces: list[str] = []
    first = session.ask("What is shown?", pieces.append)
    assert "".join(pieces) == first
    second = session.ask("Anything else?", lambda delta: None)
    assert session.turns == [Turn("user", "<image>\nWhat is shown?"), Turn("assistant", first),
                             Turn("user", "Anything else?"), Turn("assistant", second)]
    # the second answer saw the first exchange and the image
    sample = conversation_sample(session.turns[:3], 1)
    pixels = micro_generator.image_pixels([session.image])
    expected = micro_generator.generate([GenerationItem(micro_generator.prompt_ids(sample), pixels, 6)])[0].text
    assert second == expected
    session.reset()
    assert session.turns == [] and session.ask("What is shown?", lambda d: None) == first
    assert session.set_image(images / "CT.dcm", "lung") == "DICOM CT, 128x128, window lung; new conversation"
    assert session.turns == []


def test_chat_in_a_pseudo_terminal(micro_dir: Path, micro_generator, images: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TRANSFORMERS_VERBOSITY": "error",
           "TERM": "dumb"}
    child = pexpect.spawn(sys.executable, ["-m", "medvlm", "chat", "--model", str(micro_dir), "--image",
                                           str(images / "photo.png"), "--max-new-tokens", "6"],
                          cwd=str(images), env=env, encoding="utf-8", timeout=180, dimensions=(40, 200))
    transcript = io.StringIO()
    child.logfile_read = transcript  # everything the terminal showed
    try:
        child.expect_exact("[image 30x20]")
        child.expect_exact("you> ")
        child.sendline("What is shown?")
        child.expect_exact("model> ")
        child.expect_exact("you> ")
        answer = child.before.strip()
        session = ChatSession(micro_generator, max_new_tokens=6)
        session.set_image(images / "photo.png")
        assert answer == session.ask("What is shown?", lambda d: None)
        child.sendline("/window lung")
        child.expect_exact("error: /window applies to a DICOM image")
        child.sendline("/image CT.dcm bone")
        child.expect_exact("[DICOM CT, 128x128, window bone; new conversation]")
        child.sendline("/window lung")
        child.expect_exact("[DICOM CT, 128x128, window lung]")
        child.sendline("Is this a CT scan?")
        child.expect_exact("model> ")
        child.expect_exact("you> ")
        child.sendline("/save conversation.json")
        child.expect_exact("[saved to conversation.json]")
        child.sendline("/reset")
        child.expect_exact("[conversation cleared]")
        child.sendline("/nonsense")
        child.expect_exact("unknown command or arguments: /nonsense")
        child.sendline("/quit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    saved = json.loads((images / "conversation.json").read_text())
    assert saved[0]["image"] == "CT.dcm"
    assert [turn["from"] for turn in saved[0]["conversations"]] == ["human", "gpt"]
    assert saved[0]["conversations"][0]["value"] == "<image>\nIs this a CT scan?"
    shown = transcript.getvalue()
    assert "Is this a CT scan?" in shown and shown.count("model> ") == 2
    assert "CompressedSamples" not in (images / "conversation.json").read_text() + shown  # the file's patient name


def test_save_never_replaces_someones_file(micro_generator, tmp_path: Path) -> None:
    """Probe H06: ``/save FILE`` replaced whatever FILE was."""
    session = ChatSession(micro_generator, max_new_tokens=4)
    session.ask("Hello?", lambda delta: None)
    mine = tmp_path / "thesis.json"
    mine.write_text("chapter one")
    out = io.StringIO()
    with pytest.raises(OutputError, match=f"{mine}: exists and is not a file medvlm wrote"):
        _command(session, f"/save {mine}", out)  # the chat loop prints it as "error: ..." and goes on
    assert mine.read_text() == "chapter one"
    saved = tmp_path / "chat.json"
    _command(session, f"/save {saved}", out)
    session.ask("And now?", lambda delta: None)
    _command(session, f"/save {saved}", out)  # its own earlier save: replaced without asking
    assert len(json.loads(saved.read_text())[0]["conversations"]) == 4
    _command(session, f"/save {mine} --overwrite", out)
    assert len(json.loads(mine.read_text())[0]["conversations"]) == 4
    assert out.getvalue().count("[saved to") == 3
