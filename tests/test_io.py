"""posepipe.io: what inputs expand to, how they decode, and that every failure
names its input."""
from __future__ import annotations

import dataclasses
import http.server
import io
import os
import socket
import struct
import threading
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import posepipe.io
from posepipe.errors import InputError
from posepipe.io import Frame, InputFailure, InputLimits, Source, iter_frames, iter_sources, read_frame



@pytest.fixture(scope="module")
def photo(shared_dir) -> Path:
    return shared_dir / "photos" / "000000087038.jpg"  # 640x480


def read(source_input, limits=InputLimits()):
    [source] = list(iter_sources(source_input))
    return read_frame(source, limits)


def problem(source_input, limits=InputLimits()) -> str:
    with pytest.raises(InputError) as info:
        read(source_input, limits)
    return str(info.value)


def jpeg_bytes(image: np.ndarray, **pil_options) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image[..., ::-1]).save(buf, "JPEG", **pil_options)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG claiming the given size, with almost no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


# --- expansion ---------------------------------------------------------------


def test_folder_expands_like_paddlex(tmp_path, photo):
    # Subfolders walked, suffixes matched case-insensitively, full paths sorted, others ignored.
    data = photo.read_bytes()
    for rel in ["b.jpg", "a.PNG", "sub/c.jpeg", "z/y.webp", "notes.txt", "noext"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    sources = list(iter_sources(str(tmp_path)))
    expected = sorted(str(tmp_path / rel) for rel in ["b.jpg", "a.PNG", "sub/c.jpeg", "z/y.webp"])
    assert [s.input_path for s in sources] == expected
    assert all(s.is_from_folder and s.kind == "file" for s in sources)


def test_expansion_keeps_order_and_never_raises(tmp_path, photo):
    array = np.zeros((4, 5, 3), np.uint8)
    items = [str(photo), array, photo.read_bytes(), 4.2, str(tmp_path / "missing.jpg"), "https://example.com/p.jpg", Path(photo)]
    sources = list(iter_sources(items))
    assert [s.kind for s in sources] == ["file", "array", "bytes", "invalid", "invalid", "url", "file"]
    assert [s.input_path for s in sources] == [
        str(photo), None, None, None, str(tmp_path / "missing.jpg"), "https://example.com/p.jpg", str(photo)
    ]
    assert sources[1].name == "array input #1" and sources[3].name == "input #3"


def test_nested_lists_and_sources_pass_through(photo):
    inner = list(iter_sources(str(photo)))
    sources = list(iter_sources([[str(photo)], (inner[0],)]))
    assert len(sources) == 2 and sources[1] is inner[0]


def test_empty_folder_and_missing_path_fail_when_read(tmp_path):
    assert "folder contains no image files (looked for .bmp" in problem(str(tmp_path))
    missing = tmp_path / "nope.jpg"
    assert problem(str(missing)) == f"{missing}: no such file or directory"


def test_other_url_schemes_and_pdfs_are_refused(tmp_path):
    assert "only http:// and https:// URLs" in problem("ftp://example.com/a.jpg")
    (tmp_path / "doc.pdf").write_bytes(b"%PDF-1.4")
    [source] = list(iter_sources(str(tmp_path)))
    assert "PDF input is not supported" in str(pytest.raises(InputError, read_frame, source).value)


def test_unsupported_type_names_its_position():
    sources = list(iter_sources([np.zeros((2, 2, 3), np.uint8), {"a": 1}]))
    with pytest.raises(InputError, match=r"input #1: unsupported input type dict"):
        read_frame(sources[1])


# --- arrays --------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, conversion",
    [((6, 5), cv2.COLOR_GRAY2BGR), ((6, 5, 1), cv2.COLOR_GRAY2BGR), ((6, 5, 3), None), ((6, 5, 4), cv2.COLOR_BGRA2BGR)],
)
def test_arrays_become_bgr(shape, conversion):
    array = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    frame = read(array)
    expected = array if conversion is None else cv2.cvtColor(array, conversion)
    assert frame.input_path is None
    assert frame.image.shape == (6, 5, 3) and frame.image.dtype == np.uint8 and frame.image.flags.c_contiguous
    np.testing.assert_array_equal(frame.image, expected)


def test_contiguous_bgr_array_is_not_copied_and_views_are_made_contiguous():
    array = np.zeros((8, 8, 3), np.uint8)
    assert read(array).image is array
    view = array[:, ::-1]
    assert read(view).image.flags.c_contiguous


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((4, 4, 3), np.float32), "unsupported array dtype float32"),
        (np.zeros((4, 4, 2), np.uint8), "unsupported array shape (4, 4, 2)"),
        (np.zeros((2, 4, 4, 3), np.uint8), "unsupported array shape"),
        (np.zeros((0, 4, 3), np.uint8), "zero size"),
    ],
)
def test_bad_arrays_are_refused(array, message):
    assert message in problem(array)


# --- files and bytes -------------------------------------------------------------


def test_file_pixels_match_paddlex_read(photo):
    # PaddleX's ReadImage: cv2.imdecode(file bytes, IMREAD_COLOR).
    expected = cv2.imdecode(np.fromfile(str(photo), np.uint8), cv2.IMREAD_COLOR)
    frame = read(str(photo))
    assert frame.input_path == str(photo)
    np.testing.assert_array_equal(frame.image, expected)
    np.testing.assert_array_equal(read(photo.read_bytes()).image, expected)


def test_exif_orientation_is_applied_as_opencv_does(tmp_path, photo):
    image = cv2.imread(str(photo))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    path.write_bytes(jpeg_bytes(image, exif=exif.tobytes()))
    frame = read(str(path))
    assert frame.image.shape[:2] == image.shape[1::-1]
    np.testing.assert_array_equal(frame.image, cv2.imdecode(np.fromfile(str(path), np.uint8), cv2.IMREAD_COLOR))


@pytest.mark.parametrize("keep", [0.3, 0.9, 0.999])
def test_truncated_jpeg_is_refused(tmp_path, keep, photo):
    data = photo.read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: int(len(data) * keep)])
    assert "truncated or corrupt JPEG" in problem(str(path))


def test_truncated_jpeg_with_exif_thumbnail_is_refused(photo):
    # The thumbnail inside APP1 has its own start-of-scan and end-of-image
    # markers; they must not pass for the main image's.
    image = cv2.imread(str(photo))
    with_thumbnail = _jpeg_with_thumbnail(image)
    assert read(with_thumbnail).image.shape == image.shape
    cut = with_thumbnail[: len(with_thumbnail) * 2 // 3]
    assert cut.find(b"\xff\xda") < cut.rfind(b"\xff\xd9")  # a naive marker search would call it complete
    assert "truncated or corrupt JPEG" in problem(cut)


def _jpeg_with_thumbnail(image: np.ndarray) -> bytes:
    thumbnail = jpeg_bytes(cv2.resize(image, (64, 48)))
    # A minimal EXIF APP1: TIFF header, IFD0 with no entries, IFD1 pointing at the thumbnail.
    ifd1_offset = 8 + 2 + 4
    entries = [(0x0201, 4, 1, ifd1_offset + 2 + 2 * 12 + 4), (0x0202, 4, 1, len(thumbnail))]
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 0) + struct.pack(">I", ifd1_offset)
    tiff += struct.pack(">H", len(entries)) + b"".join(struct.pack(">HHII", *e) for e in entries) + struct.pack(">I", 0)
    payload = b"Exif\x00\x00" + tiff + thumbnail
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    main = jpeg_bytes(image)
    assert thumbnail[-2:] == b"\xff\xd9"
    return main[:2] + app1 + main[2:]


def test_bytes_after_the_end_of_a_jpeg_are_allowed(photo):
    # Motion photos append a video after the JPEG's end-of-image marker.
    data = photo.read_bytes() + b"\x00\x00\x00\x18ftypmp42" + os.urandom(4096)
    assert read(data).image.shape == (480, 640, 3)


def test_truncated_png_is_refused(photo):
    ok, png = cv2.imencode(".png", cv2.imread(str(photo)))
    assert "truncated or corrupt" in problem(png.tobytes()[:5000])


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty"),
        (b"hello, this is text", "not an image posepipe can read"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not an image posepipe can read (unknown format, or a corrupt header)"),
    ],
)
def test_non_images_are_refused_with_the_file_named(tmp_path, content, message):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    text = problem(str(path))
    assert text.startswith(f"{path}: ") and message in text


def test_huge_images_are_refused_from_the_header_before_decoding(photo):
    # 100k x 100k would be 30 GB decoded; the header alone must refuse it, with
    # no Pillow DecompressionBomb warning (warnings are errors under pytest here).
    assert "too large: 10000x10000 pixels, the limit is 67108864" in problem(png_header_only(10_000, 10_000))
    # Above twice Pillow's own limit Pillow refuses it itself, still from the header.
    assert "too large, the limit is 67108864 pixels (Image size (10000000000 pixels)" in problem(
        png_header_only(100_000, 100_000)
    )
    small_limit = InputLimits(max_pixels=100 * 100)
    assert "too large: 640x480 pixels, the limit is 10000" in problem(str(photo), small_limit)


def test_unreadable_file_and_directory(tmp_path, monkeypatch, photo):
    sub = tmp_path / "sub.jpg"
    sub.mkdir()
    assert "is a directory" in str(pytest.raises(InputError, read_frame, Source(str(sub), str(sub), "file")).value)

    def denied(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", path)

    # chmod 0 does not stop root (tests may run as root), so the open itself is made to fail.
    monkeypatch.setattr(posepipe.io, "open", denied, raising=False)
    assert problem(str(photo)) == f"{photo}: permission denied"


def test_multi_page_tiff_gives_one_frame_per_page(tmp_path, photo):
    image = cv2.imread(str(photo))
    pages = [Image.fromarray(image[..., ::-1]), Image.fromarray(image[::-1, :, ::-1])]
    path = tmp_path / "two.tiff"
    pages[0].save(path, save_all=True, append_images=pages[1:])
    frames = list(iter_frames(str(path)))
    assert [f.input_path for f in frames] == [str(path)] * 2
    np.testing.assert_array_equal(frames[0].image, image)
    np.testing.assert_array_equal(frames[1].image, image[::-1])


def test_iter_frames_reports_failures_and_goes_on(tmp_path, photo):
    missing = str(tmp_path / "missing.png")
    items = list(iter_frames([str(photo), missing, np.zeros((3, 3), np.uint8)]))
    assert isinstance(items[0], Frame) and isinstance(items[2], Frame)
    assert isinstance(items[1], InputFailure)
    assert items[1].input_path == missing and items[1].error.source == missing


def test_limits_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        InputLimits().max_pixels = 1


# --- URLs ------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    body = b""  # the photo, set by the server fixture

    def do_GET(self):
        try:
            self._respond()
        except ConnectionError:  # the client gave up first, as the size and time limits make it
            pass

    def _respond(self):
        if self.path == "/photo.jpg":
            self._send(200, self.body)
        elif self.path == "/slow.jpg":
            time.sleep(2)
            self._send(200, self.body)
        elif self.path == "/stream.jpg":  # no Content-Length: the cap must hold while streaming
            self.send_response(200)
            self.end_headers()
            for _ in range(64):
                self.wfile.write(b"\xff" * 1024)
        else:
            self._send(404, b"not here")

    def _send(self, code, body):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(photo):
    _Handler.body = photo.read_bytes()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_url_is_downloaded_and_decoded(server, photo):
    url = f"{server}/photo.jpg"
    frame = read(url)
    assert frame.input_path == url
    np.testing.assert_array_equal(frame.image, cv2.imread(str(photo)))


def test_url_http_error_names_the_url(server):
    url = f"{server}/missing.jpg"
    assert problem(url) == f"{url}: HTTP error 404 Not Found"


def test_url_size_cap(server):
    limits = InputLimits(max_bytes=10_000)
    assert "download is too large: 183303 bytes" in problem(f"{server}/photo.jpg", limits)
    assert "download is too large: over the limit of 10000 bytes" in problem(f"{server}/stream.jpg", limits)


def test_url_timeout(server):
    started = time.monotonic()
    assert "timed out after 0.5 s" in problem(f"{server}/slow.jpg", InputLimits(url_timeout=0.5))
    assert time.monotonic() - started < 1.9


def test_unreachable_url():
    with socket.socket() as s:  # a local port with nothing listening on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x.jpg"
    assert problem(url).startswith(f"{url}: cannot reach the URL")
