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

from conftest import load_image



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
    # Above twice Pillow's own limit too: only posepipe's limit is quoted.
    assert problem(png_header_only(100_000, 100_000)) == (
        "bytes input #0: image is too large: 100000x100000 pixels, the limit is 67108864 pixels"
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
    assert [f.page_index for f in frames] == [0, 1]
    np.testing.assert_array_equal(frames[0].image, image)
    np.testing.assert_array_equal(frames[1].image, image[::-1])
    assert [s.name for s in iter_sources(str(path))] == [f"{path} (page 0)", f"{path} (page 1)"]


def test_single_page_tiff_has_no_page_index(tmp_path, photo):
    path = tmp_path / "one.tif"
    load_image(photo).save(path)
    [frame] = list(iter_frames(str(path)))
    assert frame.page_index is None and frame.input_path == str(path)
    misnamed = tmp_path / "photo.tif"  # a JPEG under a TIFF suffix: read as what it is
    misnamed.write_bytes(photo.read_bytes())
    [frame] = list(iter_frames(str(misnamed)))
    np.testing.assert_array_equal(frame.image, cv2.imread(str(photo)))


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


# --- formats, crafted headers, bounded cost ----------------------------------------
# Each crafted file below is refused (or read) "well under a second": a functional
# bound, generous enough for a loaded machine, far below the seconds these files
# cost when a parser walked them unbounded.

FAST_S = 0.5
TIFF_RGB = {258: (3, [8, 8, 8]), 259: (3, [1]), 262: (3, [2]), 277: (3, [3]), 284: (3, [1])}


def tiff_bytes(pages) -> bytes:
    """A little-endian classic TIFF: `pages` is a list of (width, height, pixel
    bytes, extra tags {tag: (type, values)}); each page's pixels are one strip
    unless its tags say otherwise. Types: 3 SHORT, 4 LONG."""
    out = bytearray(b"II*\x00\x00\x00\x00\x00")
    pointer = 4  # where the next IFD offset goes
    for width, height, pixels, extra in pages:
        data_offset = len(out)
        out += pixels + b"\x00" * (len(pixels) % 2)
        tags = {256: (4, [width]), 257: (4, [height]), 278: (4, [height]), 273: (4, [data_offset]), 279: (4, [len(pixels)])}
        tags.update(TIFF_RGB)
        tags.update(extra)
        ifd = len(out)
        struct.pack_into("<I", out, pointer, ifd)
        values_at = ifd + 2 + 12 * len(tags) + 4
        entries, values = b"", bytearray()
        for tag in sorted(tags):
            kind, items = tags[tag]
            raw = struct.pack("<" + {3: "H", 4: "I"}[kind] * len(items), *items)
            if len(raw) <= 4:
                entries += struct.pack("<HHI", tag, kind, len(items)) + raw.ljust(4, b"\x00")
            else:
                entries += struct.pack("<HHII", tag, kind, len(items), values_at + len(values))
                values += raw
        out += struct.pack("<H", len(tags)) + entries
        pointer = len(out)
        out += b"\x00\x00\x00\x00" + values
    return bytes(out)


def timed_problem(data, limits=InputLimits()) -> str:
    """The refusal of `data`, checked to come fast. (The crafted inputs are
    megabytes: kept out of assert expressions, whose reports would print them.)"""
    started = time.perf_counter()
    try:
        read(data, limits)
    except InputError as e:
        text = str(e)
    else:
        raise AssertionError(f"not refused: {len(data)} bytes starting {bytes(data[:16])!r}")
    elapsed = time.perf_counter() - started
    if elapsed >= FAST_S:
        raise AssertionError(f"took {elapsed:.2f} s: {text}")
    return text


def test_tiff_builder_makes_readable_pages():
    pixels = [bytes(range(i, i + 12)) for i in (0, 100)]
    data = tiff_bytes([(2, 2, pixels[0], {}), (2, 2, pixels[1], {})])
    [source] = list(iter_sources(data))
    np.testing.assert_array_equal(read_frame(source).image, np.frombuffer(pixels[0], np.uint8).reshape(2, 2, 3)[..., ::-1])


def test_tiff_with_a_million_strip_offsets_is_refused_fast():
    # A 1x2-pixel image whose strip tables list a million strips (about 6 MB)...
    crafted = tiff_bytes([(1, 2, b"\x00" * 6, {273: (4, [8] * 1_000_000), 279: (3, [6] * 1_000_000)})])
    assert len(crafted) > 4_000_000
    text = timed_problem(crafted)
    assert text == (
        "bytes input #0: corrupt TIFF header: TIFF page 0: tag 273 has 1000000 values, more than 262144"
    )
    # ... or just more than its two rows can use.
    assert timed_problem(tiff_bytes([(1, 2, b"\x00" * 6, {273: (4, [8] * 3), 279: (3, [2] * 3)})])) == (
        "bytes input #0: corrupt TIFF header: TIFF page 0 lists 3 strips for a 1x2 image (at most 2 can be used)"
    )


def test_tiff_tags_and_pages_are_bounded():
    too_many_values = tiff_bytes([(1, 1, b"\x00" * 3, {320: (3, [0] * 300_000)})])
    text = timed_problem(too_many_values)
    assert "tag 320 has 300000 values, more than 262144" in text
    impossible = tiff_bytes([(1, 1, b"\x00" * 3, {50000: (4, [0] * 10)})])
    bad = bytearray(impossible)
    struct.pack_into("<I", bad, bad.index(struct.pack("<HHI", 50000, 4, 10)) + 4, 10**9)  # claims 1e9 values
    text = timed_problem(bytes(bad))
    assert "tag 50000 claims 1000000000 values, more than the file holds" in text


def test_tiff_pages_are_counted_cheaply_and_bounded(tmp_path):
    page = (1, 1, b"\x00" * 3, {})
    path = tmp_path / "many.tif"
    path.write_bytes(tiff_bytes([page] * 1025))
    started = time.perf_counter()
    [source] = list(iter_sources(str(path)))
    assert time.perf_counter() - started < FAST_S
    assert pytest.raises(InputError, read_frame, source).value.problem == (
        "TIFF has more than 1024 pages; posepipe reads at most 1024 per file"
    )
    path.write_bytes(tiff_bytes([page] * 1024))
    assert len(list(iter_sources(str(path)))) == 1024


def test_tiff_page_chain_that_loops_ends_there(tmp_path):
    data = bytearray(tiff_bytes([(1, 1, b"\x00" * 3, {}), (1, 1, b"\x01" * 3, {})]))
    first = struct.unpack_from("<I", data, 4)[0]
    second = struct.unpack_from("<I", data, first + 2 + 12 * struct.unpack_from("<H", data, first)[0])[0]
    struct.pack_into("<I", data, second + 2 + 12 * struct.unpack_from("<H", data, second)[0], first)  # page 1 -> page 0
    path = tmp_path / "loop.tiff"
    path.write_bytes(bytes(data))
    assert [f.page_index for f in iter_frames(str(path))] == [0, 1]


def test_bytes_read_only_the_first_tiff_page():
    """The server's path (encoded bytes) uses page 0, so it neither counts nor
    parses the pages after it: a broken second page does not matter there."""
    good = (2, 1, bytes(range(6)), {})
    data = bytearray(tiff_bytes([good, good]))
    first = struct.unpack_from("<I", data, 4)[0]
    second = struct.unpack_from("<I", data, first + 2 + 12 * struct.unpack_from("<H", data, first)[0])[0]
    struct.pack_into("<H", data, second, 60000)  # page 1 claims 60000 tags, running past the end of the file
    frame = read(bytes(data))  # no warning about page 1 either (warnings are errors in these tests)
    np.testing.assert_array_equal(frame.image, np.array([[[2, 1, 0], [5, 4, 3]]], np.uint8))
    path_pages = list(iter_frames([bytes(data)]))
    assert len(path_pages) == 1 and isinstance(path_pages[0], Frame)


def test_malformed_second_page_fails_alone(tmp_path):
    """A TIFF whose second page is malformed: pages 0 and 2 are read, page 1's
    failure names the page, and a folder run goes on."""
    good = (2, 1, bytes(range(6)), {})
    path = tmp_path / "pages.tif"
    for broken in [
        (1, 1, b"\x00" * 3, {273: (4, [8] * 5000)}),  # strip table far larger than the page
        (2, 1, bytes(6), {259: (3, [12345])}),  # unknown compression
        (2, 1, bytes(6), {258: (3, [7, 7, 7])}),  # 7-bit samples: no pixel mode
        (2, 1, bytes(6), {273: (4, [10**8])}),  # pixels past the end of the file
        (2, 1, bytes(6), {50000: (4, [1, 2])}),  # made below: a tag whose values lie past the end
    ]:
        data = bytearray(tiff_bytes([good, broken, good]))
        entry = data.find(struct.pack("<HHI", 50000, 4, 2))
        if entry != -1:
            struct.pack_into("<I", data, entry + 8, 10**8)
        path.write_bytes(bytes(data))
        items = list(iter_frames(str(path)))
        assert [type(i).__name__ for i in items] == ["Frame", "InputFailure", "Frame"], broken
        assert [i.page_index for i in items] == [0, 1, 2]
        assert str(items[1].error).startswith(f"{path} (page 1): ")


def test_png_with_endless_chunks_is_refused_fast():
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 1, 8, 2, 0, 0, 0))
    idat = chunk(b"IDAT", zlib.compress(b"\x00" + bytes(range(6))))
    empty = chunk(b"zzZz", b"")  # a private chunk type: libpng skips it
    signature, end = b"\x89PNG\r\n\x1a\n", chunk(b"IEND", b"")
    for crafted in (signature + ihdr + empty * 500_000 + idat + end, signature + ihdr + idat + empty * 500_000 + end):
        text = timed_problem(crafted)
        assert text == "bytes input #0: corrupt PNG header: more than 1024 chunks besides the image data"
    empty_data = signature + ihdr + idat + chunk(b"IDAT", b"") * 500_000 + end
    text = timed_problem(empty_data)
    assert text == "bytes input #0: corrupt PNG header: more than 131072 image data chunks"
    some = signature + ihdr + empty * 1000 + idat + chunk(b"IDAT", b"") * 10_000 + end  # within the bounds
    np.testing.assert_array_equal(read(some).image, np.array([[[2, 1, 0], [5, 4, 3]]], np.uint8))


def test_jpeg_padding_is_read_fast_and_endless_segments_are_refused(photo):
    data = photo.read_bytes()
    expected = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    padded = data[:2] + b"\xff" * 4_000_000 + data[2:]  # fill bytes are legal before any marker
    started = time.perf_counter()
    np.testing.assert_array_equal(read(padded).image, expected)
    assert time.perf_counter() - started < FAST_S
    segments = data[:2] + b"\xff\xe5\x00\x02" * 1_000_000 + data[2:]  # a million empty APP5 segments
    text = timed_problem(segments)
    assert text == (
        "bytes input #0: corrupt JPEG header: more than 1024 marker segments before the image data"
    )
    scan = data.index(b"\xff\xda")
    many_scans = data[: scan + 2] + data[scan + 2 : -2] + b"\xff\xda" * 300 + data[-2:]
    text = timed_problem(many_scans)
    assert "JPEG has 301 scans, more than the 256 posepipe decodes" in text


def gif_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(buf, "GIF")
    return buf.getvalue()


def test_gif_and_other_formats_are_refused_by_name(tmp_path):
    supported = "posepipe reads BMP, JPEG, PNG, PNM, Sun raster, TIFF and WebP (PaddleX's formats)"
    path = tmp_path / "anim.gif"
    path.write_bytes(gif_bytes())
    assert problem(str(path)) == f"{path}: GIF images are not supported: {supported}"
    buf = io.BytesIO()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(buf, "ICO")
    assert problem(buf.getvalue()) == f"bytes input #0: ICO images are not supported: {supported}"
    # A folder is searched for PaddleX's suffixes only: the GIF is not listed.
    (tmp_path / "ok.png").write_bytes(cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))[1].tobytes())
    assert [s.input_path for s in iter_sources(str(tmp_path))] == [str(tmp_path / "ok.png")]


@pytest.mark.parametrize("ext, params", [(".bmp", []), (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]), (".webp", [cv2.IMWRITE_WEBP_QUALITY, 80]),
                                         (".ppm", []), (".pgm", []), (".pbm", []), (".ras", []), (".png", []), (".tiff", [])])
def test_supported_formats_read_as_opencv_reads_them(ext, params):
    rng = np.random.default_rng(len(ext))
    image = rng.integers(0, 256, (13, 17, 3), dtype=np.uint8)
    if ext in (".pgm", ".pbm"):
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    ok, encoded = cv2.imencode(ext, image, params)
    assert ok
    frame = read(encoded.tobytes())
    np.testing.assert_array_equal(frame.image, cv2.imdecode(encoded, cv2.IMREAD_COLOR))


def test_pnm_comments_in_the_header():
    data = b"P6\n# a comment\n# another\n2 1\n# more\n255\n" + bytes(range(6))
    np.testing.assert_array_equal(read(data).image, np.array([[[2, 1, 0], [5, 4, 3]]], np.uint8))
    endless = b"P6 #" + b"x" * 200_000 + b"\n2 1 255\n" + bytes(6)
    text = timed_problem(endless)
    assert "corrupt PNM header: no width and height in its first 65536 bytes" in text


def test_rle_bmp_wider_than_opencv_decodes_is_a_clean_error():
    # 1,100,000 x 1 pixels in a few hundred bytes (RLE8: one run, then end of bitmap).
    palette = b"\x00\x00\x00\x00" * 256
    rle = b"\xff\x07" * 100 + b"\x00\x01"
    info = struct.pack("<IiiHHIIiiII", 40, 1_100_000, 1, 1, 8, 1, len(rle), 2835, 2835, 256, 0)
    offset = 14 + len(info) + len(palette)
    bmp = b"BM" + struct.pack("<IHHI", offset + len(rle), 0, 0, offset) + info + palette + rle
    assert len(bmp) < 2000
    text = timed_problem(bmp)
    assert text == "bytes input #0: image is 1100000x1 pixels: OpenCV decodes at most 1048576 pixels per side"


def test_opencv_errors_become_input_errors(monkeypatch, photo):
    def refuse(*args, **kwargs):
        raise cv2.error("OpenCV(4.10.0) /io/opencv/modules/imgcodecs/src/loadsave.cpp:77: error: (-215:Assertion failed) something in function 'f'")

    monkeypatch.setattr(posepipe.io.cv2, "imdecode", refuse)
    assert problem(str(photo)) == (
        f"{photo}: OpenCV cannot decode this JPEG image ((-215:Assertion failed) something in function 'f')"
    )


def test_reading_uses_no_process_wide_warning_state(monkeypatch, photo):
    """warnings.catch_warnings swaps the process's filters (not thread-safe
    before Python 3.14), and a lock around it serialises all decoding: reading
    needs neither, and Pillow's own size warning never fires, whatever its limit."""
    import warnings

    from PIL import Image as PILImage

    def forbidden(*args, **kwargs):
        raise AssertionError("warnings.catch_warnings was used")

    monkeypatch.setattr(warnings, "catch_warnings", forbidden)
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1000)  # every photo is "too large" for Pillow now
    assert read(str(photo)).image.shape == (480, 640, 3)
    assert read(cv2.imencode(".png", np.zeros((300, 200, 3), np.uint8))[1].tobytes()).image.shape == (300, 200, 3)
    assert "too large: 10000x10000 pixels" in problem(png_header_only(10_000, 10_000))


def test_empty_input_says_so():
    assert problem("") == '"": empty input: give an image file, a folder or an http(s) URL'
    assert problem("  ") == '"  ": empty input: give an image file, a folder or an http(s) URL'


def test_special_files_are_not_read(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # a writer, so that opening it to read does not block
    try:
        assert problem(str(fifo)) == f"{fifo}: not a regular file"
    finally:
        os.close(fd)
