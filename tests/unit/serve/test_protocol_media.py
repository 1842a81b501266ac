"""Requests to conversations, and where images may come from (data URLs, the image root, never elsewhere)."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from medvlm.data.images import load_image
from medvlm.data.records import Turn
from medvlm.serve.media import MediaPolicy, RequestError, decode_image, read_image
from medvlm.serve.protocol import conversation_of, parse_request
from tests.helpers.serving import png_data_url


def request(messages: list, **extra) -> dict:
    return {"model": "m", "messages": messages, **extra}


def test_one_image_goes_to_the_front_of_the_first_question() -> None:
    url = png_data_url()
    chat = parse_request(request([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                     {"type": "image_url", "image_url": {"url": url, "dicom": {"window": "lung"}}}]},
    ]))
    conversation = conversation_of(chat)
    assert conversation.system == "Be brief."
    assert [image.dicom for image in conversation.images] == [{"window": "lung"}]
    assert conversation.images[0].param == "messages.3.content.1"
    sample = conversation.sample()
    assert sample.turns == [Turn("user", "Hello"), Turn("assistant", "Hi."), Turn("user", "What is this?")]
    assert sample.images == ["image-1"]


def test_several_images_stay_in_their_turns() -> None:
    image = {"type": "image_url", "image_url": {"url": png_data_url()}}
    chat = parse_request(request([
        {"role": "user", "content": [image, {"type": "text", "text": "First?"}]},
        {"role": "assistant", "content": "One."},
        {"role": "user", "content": [image, {"type": "text", "text": "And this?"}]},
    ], max_tokens=3, temperature=0, stop="###"))
    sample = conversation_of(chat).sample()
    assert [turn.text for turn in sample.turns] == ["<image>\nFirst?", "One.", "<image>\nAnd this?"]
    assert chat.token_budget == 3 and chat.stops == ("###",)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"model": "m"}, "messages: Field required"),
        (request("hello"), "messages: Input should be a valid list"),
        (request([{"role": "user", "content": "x"}], max_tokens="5"), "max_tokens: Input should be a valid integer"),
        (request([{"role": "user", "content": "x"}], temperature=3), "temperature: Input should be less than"),
        (request([{"role": "user", "content": "x"}], n=2), "n: Input should be less than or equal to 1"),
        (request([{"role": "tool", "content": "x"}]), "messages.0.role: Input should be"),
        (request([{"role": "user", "content": [{"type": "video", "url": "x"}]}]), "messages.0.content"),
        ([1, 2], "body: Input should be a valid dictionary"),
    ],
)
def test_malformed_requests_name_the_field(payload, message) -> None:
    with pytest.raises(RequestError, match=message) as caught:
        parse_request(payload)
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([{"role": "assistant", "content": "x"}], "the last message must be from the user"),
        ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "must alternate"),
        ([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}], "system messages must come before"),
        ([{"role": "user", "content": "see <image> here"}], "may not contain '<image>'"),
        ([{"role": "user", "content": "a"}, {"role": "assistant", "content": [
            {"type": "image_url", "image_url": {"url": "data:,"}}]}, {"role": "user", "content": "b"}],
         "assistant messages cannot carry images"),
    ],
)
def test_conversations_the_templates_cannot_take_are_refused(messages, message) -> None:
    with pytest.raises(RequestError, match=message):
        conversation_of(parse_request(request(messages)))


def test_data_urls_are_decoded_within_limits() -> None:
    policy = MediaPolicy(max_image_bytes=4000, max_image_pixels=2000)
    image = decode_image(read_image(png_data_url((24, 40)), policy), policy)
    assert image.size == (24, 40) and image.mode == "RGB"
    with pytest.raises(RequestError, match="over the limit of 2,000"):
        decode_image(read_image(png_data_url((50, 50)), policy), policy)
    big = "data:image/png;base64," + base64.b64encode(os.urandom(6000)).decode()
    with pytest.raises(RequestError, match="larger than the limit of 4,000 bytes") as caught:
        read_image(big, policy)
    assert caught.value.status == 413
    for url, message in [("data:image/png,abc", "must be base64"), ("data:image/png;base64,@@@", "invalid"),
                         ("data:text/html;base64,PGI+", "not an image or DICOM"), ("ftp://host/a.png", "scheme 'ftp'"),
                         ("data:image/png;base64,aGVsbG8=", "cannot decode the image")]:
        with pytest.raises(RequestError, match=message):
            decode_image(read_image(url, policy), policy)


def test_remote_urls_are_refused_unless_enabled() -> None:
    with pytest.raises(RequestError, match="remote image URLs are disabled") as caught:
        read_image("https://example.org/scan.png", MediaPolicy())
    assert caught.value.status == 400


def test_local_paths_only_inside_the_image_root(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "secret"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    data = base64.b64decode(png_data_url().split(",", 1)[1])
    (root / "sub" / "a.png").write_bytes(data)
    (outside / "b.png").write_bytes(data)
    (root / "link.png").symlink_to(outside / "b.png")
    policy = MediaPolicy(image_root=root)
    assert read_image("sub/a.png", policy).data == data
    assert read_image(f"file://{root}/sub/a.png", policy).data == data
    escapes = ["../secret/b.png", str(outside / "b.png"), f"file://{outside}/b.png", "link.png",
               "sub/../../secret/b.png"]
    for path in escapes:
        with pytest.raises(RequestError, match="outside the server's image root") as caught:
            read_image(path, policy)
        assert caught.value.status == 403
    with pytest.raises(RequestError, match="not found under the image root"):
        read_image("sub/missing.png", policy)
    with pytest.raises(RequestError, match="local image paths are disabled") as caught:
        read_image("sub/a.png", MediaPolicy())
    assert caught.value.status == 403


def test_uploaded_dicom_renders_like_the_file_with_its_window(tmp_path: Path) -> None:
    source = Path(get_testdata_file("CT_small.dcm"))
    url = "data:application/dicom;base64," + base64.b64encode(source.read_bytes()).decode()
    policy = MediaPolicy()
    image = read_image(url, policy)
    assert image.dicom
    for window in ("lung", "bone"):
        uploaded = decode_image(image, policy, {"window": window})
        assert uploaded.tobytes() == load_image(source, dicom={"window": window}).tobytes()
    with pytest.raises(RequestError, match="window") as caught:
        decode_image(image, policy, {"window": "nonsense"})
    assert str(tmp_path) not in str(caught.value) and "medvlm-upload" not in str(caught.value)
    with pytest.raises(RequestError, match="DICOM settings were given for an image that is not DICOM"):
        decode_image(read_image(png_data_url(), policy), policy, {"window": "lung"})
    assert pydicom.dcmread(source).PatientName  # the file has a patient name; nothing of it is returned
