"""``medvlm serve`` as a user starts it, and the ``--engine vllm`` hand-over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from medvlm.cli import main
from medvlm.serve.server import VLLM_NO_REMOTE_DOMAIN, ServeSettings, vllm_command

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.slow  # a fresh interpreter loads torch and the model: ~30 s on a busy 2-core machine
def test_serve_command_answers_and_logs_nothing_identifying(micro_dir: Path, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MEDVLM_API_KEY": "k3y"}
    log = open(tmp_path / "server.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "medvlm", "serve", "--model", str(micro_dir), "--port",
                                str(port), "--max-new-tokens", "4"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.2)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k3y", max_retries=0)
        assert [model.id for model in client.models.list().data] == ["micro"]  # named after the directory
        reply = client.chat.completions.create(model="micro", messages=[
            {"role": "user", "content": "Mrs Jane Roe asks: is the lesion benign?"}])
        assert reply.usage.completion_tokens <= 4  # the server's default answer length
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="nope", max_retries=0).models.list()
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()
    logged = (tmp_path / "server.log").read_text()
    assert f"serving micro on http://127.0.0.1:{port}" in logged and "chat 200" in logged
    assert "Jane" not in logged and "lesion" not in logged and "k3y" not in logged


def test_vllm_engine_without_vllm_is_a_clear_error(micro_dir: Path, capsys) -> None:
    try:
        import vllm  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("vLLM is installed here")
    assert main(["serve", "--model", str(micro_dir), "--engine", "vllm"]) == 2
    assert "--engine vllm needs vLLM, which is not importable here" in capsys.readouterr().err


def test_vllm_command_keeps_medvlm_template_and_safety_defaults(tmp_path: Path) -> None:
    settings = ServeSettings(model=str(tmp_path / "run" / "model"), port=8100, dtype="bfloat16",
                             image_root=str(tmp_path), api_key="secret")
    command = vllm_command(settings, "/tmp/template.jinja")
    assert command[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    pairs = {flag: command[i + 1] for i, flag in enumerate(command) if flag.startswith("--") and i + 1 < len(command)}
    assert pairs["--served-model-name"] == "run" and pairs["--host"] == "127.0.0.1"
    assert pairs["--chat-template"] == "/tmp/template.jinja" and pairs["--dtype"] == "bfloat16"
    assert pairs["--allowed-local-media-path"] == str(tmp_path.resolve())
    assert command[command.index("--allowed-media-domains") + 1] == VLLM_NO_REMOTE_DOMAIN
    assert "secret" not in " ".join(command)  # the key travels in VLLM_API_KEY, not on the command line
    remote = vllm_command(ServeSettings(model="m", allow_remote_images=True), "t.jinja")
    assert "--allowed-media-domains" not in remote and "--allowed-local-media-path" not in remote


def test_serve_and_chat_prompt_a_model_as_it_was_trained(micro_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """As predict does: the trained prompt (prompt.json) unless told otherwise, else the family's template —
    the demo's models train with an empty system prompt and were served with Vicuna's long one."""
    import shutil

    import uvicorn

    from medvlm.model.export import prompt_settings
    from medvlm.model.tiny import build_tiny
    from medvlm.serve.server import serve

    trained = tmp_path / "trained"
    shutil.copytree(micro_dir, trained)
    (trained / "prompt.json").write_text(json.dumps({"template": "vicuna_v1", "system_prompt": ""}))
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: None)
    settings = ServeSettings(model=str(trained), port=0)
    assert serve(settings) == 0
    assert (settings.template, settings.system_prompt) == ("vicuna_v1", "")
    told = ServeSettings(model=str(trained), port=0, template="mistral_instruct")
    assert serve(told) == 0 and (told.template, told.system_prompt) == ("mistral_instruct", None)
    # no prompt record: the family's own template (Qwen2.5-VL: chatml), not LLaVA's
    qwen = tmp_path / "qwen"
    model, processor = build_tiny("micro-clip-llama", family="qwen2_5_vl", template="chatml")
    model.save_pretrained(qwen)
    processor.save_pretrained(qwen)
    assert prompt_settings(qwen, None, None) == ("chatml", None)
    assert prompt_settings(micro_dir, None, None) == ("vicuna_v1", None)
    # chat: the same resolution
    import io

    from medvlm.serve import chat

    seen, real = [], chat.Generator

    def recording(model, processor, template, system_prompt, *rest):
        seen.append((template, system_prompt))
        return real(model, processor, template, system_prompt, *rest)

    monkeypatch.setattr(chat, "Generator", recording)

    def leave(_prompt: str) -> str:
        raise EOFError

    assert chat.run_chat(str(trained), read=leave, out=io.StringIO()) == 0
    assert seen == [("vicuna_v1", "")]


def test_an_unresolvable_host_is_refused_before_the_model_loads(micro_dir: Path, capsys) -> None:
    """Probe F12: ``--host 'not a host!'`` loaded the model, then uvicorn logged an error and exited 3."""
    assert main(["serve", "--model", str(micro_dir), "--host", "not a host!"]) == 2
    assert "--host not a host!: not an address or host name this machine can resolve" in capsys.readouterr().err
