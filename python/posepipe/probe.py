"""Image headers read without decoding: the format, the size and (TIFF) the
pages, with bounds on every structure a decoder would otherwise walk.

Why not Pillow's Image.open: it walks JPEG markers, PNG chunks and TIFF tags in
Python with no bound (measured: a 4 MB JPEG of padding bytes, 1.3 s; a PNG with
500k empty chunks before its pixel data, 1.2 s; a TIFF of a 1x2-pixel image
with a million strip offsets, 9 s and 240 MB), and it reports large images
through the process-wide warnings machinery. The walkers here read the few
bytes they need, stop at a fixed count of structures, and never warn: a crafted
file is refused in milliseconds, before any decoder sees it. OpenCV's decoders
(everything but TIFF) walk the rest in C; Pillow decodes TIFF pages, whose
tags are bounded here first.

The formats are PaddleX's (its folder suffixes, read by OpenCV 4.10): BMP/DIB,
JPEG, PNG, PNM (pbm/pgm/ppm), Sun raster, TIFF and WebP. Others are refused by
name: GIF, for one, is not in PaddleX's list, OpenCV 4.10 cannot decode it and
later OpenCV versions can, so accepting it would make results depend on the
installed OpenCV."""
from __future__ import annotations

import io
import re
import struct
from dataclasses import dataclass
from typing import BinaryIO, Dict, Optional, Tuple

from .errors import InputError

# A few hundred structures is what real files have; these bounds are far above
# that and far below what makes parsing slow.
MAX_JPEG_SEGMENTS = 1024  # marker segments before the first scan (APPn, DQT, DHT, SOF, ...)
MAX_JPEG_SCANS = 256  # a progressive JPEG has about 10; libjpeg re-walks the image per scan
MAX_PNG_CHUNKS = 1024  # chunks other than pixel data (IDAT); libpng warns on stderr about each odd one
MAX_PNG_DATA_CHUNKS = 1 << 17  # IDAT chunks: 1 GB in libpng's 8 KB chunks
MAX_TIFF_PAGES = 1024
MAX_TIFF_TAGS = 1024  # entries in one IFD
# Values in one numeric tag, strip and tile tables included (a 16-bit ColorMap
# has 196608; an 8192-row image stored a row per strip, 8192 strips).
MAX_TIFF_VALUES = 1 << 18
# OpenCV refuses images wider or taller than this (CV_IO_MAX_IMAGE_WIDTH/HEIGHT).
OPENCV_MAX_SIDE = 1 << 20

SUPPORTED = "BMP, JPEG, PNG, PNM, Sun raster, TIFF and WebP"
_PNM_HEADER_BYTES = 1 << 16


@dataclass(frozen=True)
class Header:
    format: str  # "JPEG", "PNG", "TIFF", "BMP", "WEBP", "PNM", "SUN"
    width: int
    height: int
    ifd_offset: int = 0  # TIFF: where the page's directory starts
    # JPEG's APP1, PNG's eXIf: (offset, length) of the EXIF block, read only by oriented_size.
    exif: Optional[Tuple[int, int]] = None
    orientation: int = 1  # TIFF: the page's Orientation tag


def read_header(f: BinaryIO, size: int, name: str, max_pixels: Optional[int], page: int = 0) -> Header:
    """The header of the image in `f` (`size` bytes; for TIFF, of page `page`),
    or InputError naming `name` and the problem. max_pixels None: no size limit."""
    reader = _Reader(f, size)
    magic = reader.at(0, 16)
    if not magic:
        raise InputError(name, "empty: no image data")
    parse = next((p for prefix, p in _PARSERS if magic.startswith(prefix)), None)
    if parse is None:
        other = next((label for prefix, label in _UNSUPPORTED if magic.startswith(prefix)), None)
        if other is None and magic[4:8] == b"ftyp":
            other = "HEIF/AVIF"
        if other is not None:
            raise InputError(name, f"{other} images are not supported: posepipe reads {SUPPORTED} (PaddleX's formats)")
        raise InputError(name, "not an image posepipe can read (unknown format, or a corrupt header)")
    header = parse(reader, name, page)
    w, h = header.width, header.height
    if w <= 0 or h <= 0:
        raise InputError(name, f"image has zero size ({w}x{h})")
    if max_pixels is not None and w * h > max_pixels:
        raise InputError(name, f"image is too large: {w}x{h} pixels, the limit is {max_pixels} pixels")
    if header.format != "TIFF" and max(w, h) > OPENCV_MAX_SIDE:
        raise InputError(
            name, f"image is {w}x{h} pixels: OpenCV decodes at most {OPENCV_MAX_SIDE} pixels per side"
        )
    return header


_ORIENTATION = 0x0112  # the EXIF tag


def oriented_size(f: BinaryIO, size: int, header: Header) -> Optional[Tuple[int, int]]:
    """(width, height) of the image as the pipeline decodes it: OpenCV turns
    JPEG and PNG by their EXIF orientation, Pillow TIFF pages by their
    Orientation tag; orientations 5-8 swap the sides. None for WebP: OpenCV
    4 keeps it as stored and OpenCV 5 turns it, so only a decode can tell."""
    if header.format == "WEBP":
        return None
    orientation = header.orientation if header.format == "TIFF" else _exif_orientation(_Reader(f, size), header)
    if orientation in (5, 6, 7, 8):
        return header.height, header.width
    return header.width, header.height


def _exif_orientation(r: _Reader, header: Header) -> int:
    """The EXIF Orientation tag (1-8) of IFD0, 1 when absent or unreadable."""
    if header.exif is None or header.format not in ("JPEG", "PNG"):
        return 1
    start, length = header.exif
    block = r.at(start, min(length, 1 << 16))  # JPEG's APP1 holds at most 64 KB
    if len(block) < 8 or block[:4] not in (b"II*\x00", b"MM\x00*"):
        return 1
    endian = "<" if block[:2] == b"II" else ">"
    ifd = struct.unpack(endian + "I", block[4:8])[0]
    if ifd + 2 > len(block):
        return 1
    count = min(struct.unpack(endian + "H", block[ifd : ifd + 2])[0], MAX_TIFF_TAGS)
    for entry in range(ifd + 2, min(ifd + 2 + 12 * count, len(block) - 11), 12):
        tag, kind = struct.unpack(endian + "HH", block[entry : entry + 4])
        if tag == _ORIENTATION and kind == 3:  # SHORT
            value = struct.unpack(endian + "H", block[entry + 8 : entry + 10])[0]
            return value if 1 <= value <= 8 else 1
    return 1


class _Reader:
    """Random access to the first `size` bytes of a binary file."""

    def __init__(self, f: BinaryIO, size: int):
        self.f, self.size = f, size

    def at(self, offset: int, n: int) -> bytes:
        if offset < 0 or offset >= self.size:
            return b""
        self.f.seek(offset)
        return self.f.read(min(n, self.size - offset))


def _corrupt(name: str, fmt: str, problem: str) -> InputError:
    return InputError(name, f"corrupt {fmt} header: {problem}")


# --- JPEG --------------------------------------------------------------------

# Start-of-frame markers: baseline, progressive, lossless, arithmetic (not DHT C4, JPG C8, DAC CC).
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_FILL = re.compile(rb"\xff+")


def _jpeg(r: _Reader, name: str, page: int) -> Header:
    """Walks the marker segments by their lengths up to the first scan."""
    i, segments, size, exif = 2, 0, None, None
    while True:
        block = r.at(i, 4096)
        if len(block) < 2:
            break
        if block[0] != 0xFF:
            break  # not a marker: let the decoder judge the file
        run = _FILL.match(block).end()  # fill bytes: any number of 0xFF before a marker
        if run == len(block):
            i += run - 1
            continue
        i += run - 1
        marker = block[run]
        if marker == 0xDA:
            break
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            i += 2
            continue
        segments += 1
        if segments > MAX_JPEG_SEGMENTS:
            raise _corrupt(name, "JPEG", f"more than {MAX_JPEG_SEGMENTS} marker segments before the image data")
        head = r.at(i, 9)
        if len(head) < 4:
            break
        if marker in _SOF and size is None and len(head) >= 9:
            size = struct.unpack(">HH", head[5:9])[::-1]
        length = struct.unpack(">H", head[2:4])[0]
        if marker == 0xE1 and exif is None and r.at(i + 4, 6) == b"Exif\x00\x00":
            exif = (i + 10, max(length - 8, 0))
        i += 2 + length
    if size is None:
        raise _corrupt(name, "JPEG", "no frame header (SOF) before the image data")
    return Header("JPEG", size[0], size[1], exif=exif)


def check_jpeg_body(data: bytes, name: str) -> None:
    """Refuses a JPEG whose first scan has no end-of-image marker after it
    (OpenCV 4.x returns the top of a cut-off JPEG with the rest filled in,
    silently), or with more scans than MAX_JPEG_SCANS.

    Inside entropy-coded data every 0xFF byte is followed by 00 or a restart
    marker, so FF D9 / FF DA found after the first scan are real markers.
    Walking the segments first skips an EXIF thumbnail's own markers (inside
    APP1). Bytes after the end marker (the video of a motion photo) are allowed."""
    first_scan = _first_scan(data)
    if first_scan is None or data.rfind(b"\xff\xd9", first_scan) == -1:
        raise InputError(name, "truncated or corrupt JPEG (the image data ends early)")
    scans = data.count(b"\xff\xda", first_scan)
    if scans > MAX_JPEG_SCANS:
        raise InputError(name, f"JPEG has {scans} scans, more than the {MAX_JPEG_SCANS} posepipe decodes")


def _first_scan(data: bytes) -> Optional[int]:
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return i  # not a marker: malformed in a way this check does not judge; leave it to the decoder
        marker = data[i + 1]
        if marker == 0xFF:
            i = _FILL.match(data, i).end() - 1
        elif marker == 0xDA:
            return i
        elif 0xD0 <= marker <= 0xD7 or marker == 0x01:
            i += 2
        else:
            i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


# --- PNG ---------------------------------------------------------------------


def _png(r: _Reader, name: str, page: int) -> Header:
    head = r.at(8, 25)
    if len(head) < 25 or head[4:8] != b"IHDR" or struct.unpack(">I", head[:4])[0] != 13:
        raise InputError(name, "not an image posepipe can read (unknown format, or a corrupt header)")
    width, height = struct.unpack(">II", head[8:16])
    # The chunks are only counted (OpenCV's libpng checks their CRCs).
    offset, other, data, exif = 8, 0, 0, None
    while True:
        length_kind = r.at(offset, 8)
        if len(length_kind) < 8 or length_kind[4:8] == b"IEND":
            break
        if length_kind[4:8] == b"eXIf" and exif is None:
            exif = (offset + 8, struct.unpack(">I", length_kind[:4])[0])
        if length_kind[4:8] == b"IDAT":
            data += 1
            if data > MAX_PNG_DATA_CHUNKS:
                raise _corrupt(name, "PNG", f"more than {MAX_PNG_DATA_CHUNKS} image data chunks")
        else:
            other += 1
            if other > MAX_PNG_CHUNKS:
                raise _corrupt(name, "PNG", f"more than {MAX_PNG_CHUNKS} chunks besides the image data")
        offset += 12 + struct.unpack(">I", length_kind[:4])[0]
    return Header("PNG", width, height, exif=exif)


# --- TIFF --------------------------------------------------------------------

_TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}
_TIFF_BYTE_TYPES = frozenset({1, 2, 6, 7})  # read as one bytes object, whatever their count
_WIDTH, _HEIGHT, _SAMPLES, _ROWS_PER_STRIP, _PLANAR = 256, 257, 277, 278, 284
_STRIP_OFFSETS, _STRIP_COUNTS, _TILE_WIDTH, _TILE_HEIGHT, _TILE_OFFSETS, _TILE_COUNTS = 273, 279, 322, 323, 324, 325
_BLOCK_TAGS = (_STRIP_OFFSETS, _STRIP_COUNTS, _TILE_OFFSETS, _TILE_COUNTS)


@dataclass(frozen=True)
class _TiffLayout:
    endian: str  # "<" or ">"
    big: bool  # BigTIFF: 8-byte counts and offsets
    first_ifd: int

    @property
    def entry_size(self) -> int:
        return 20 if self.big else 12


def _tiff_layout(r: _Reader, name: str) -> _TiffLayout:
    head = r.at(0, 16)
    endian = "<" if head[:2] == b"II" else ">"
    version = struct.unpack(endian + "H", head[2:4])[0]
    if version == 43 and len(head) >= 16:
        return _TiffLayout(endian, True, struct.unpack(endian + "Q", head[8:16])[0])
    if version == 42 and len(head) >= 8:
        return _TiffLayout(endian, False, struct.unpack(endian + "I", head[4:8])[0])
    raise InputError(name, "not an image posepipe can read (unknown format, or a corrupt header)")


def _ifd(r: _Reader, layout: _TiffLayout, offset: int) -> Optional[Tuple[int, int]]:
    """(entry count, offset of the next IFD) of the IFD at `offset`, or None
    when it does not fit in the file."""
    count_size, count_fmt = (8, "Q") if layout.big else (2, "H")
    offset_size, offset_fmt = (8, "Q") if layout.big else (4, "I")
    raw = r.at(offset, count_size)
    if offset < 8 or len(raw) < count_size:
        return None
    entries = struct.unpack(layout.endian + count_fmt, raw)[0]
    next_raw = r.at(offset + count_size + entries * layout.entry_size, offset_size)
    if len(next_raw) < offset_size:
        return entries, 0
    return entries, struct.unpack(layout.endian + offset_fmt, next_raw)[0]


def count_tiff_pages(f: BinaryIO, size: int, name: str) -> int:
    """Pages of the TIFF in `f`, from the chain of IFD offsets alone (a few
    bytes per page); 1 when `f` holds no TIFF (a JPEG named .tif, say).
    InputError above MAX_TIFF_PAGES; a chain that loops or points past the
    end of the file ends there."""
    r = _Reader(f, size)
    if not r.at(0, 4).startswith(_TIFF_MAGIC):
        return 1
    layout = _tiff_layout(r, name)
    offset, seen = layout.first_ifd, set()
    while offset and offset not in seen:
        ifd = _ifd(r, layout, offset)
        if ifd is None:
            break
        seen.add(offset)
        if len(seen) > MAX_TIFF_PAGES:
            raise InputError(name, f"TIFF has more than {MAX_TIFF_PAGES} pages; posepipe reads at most {MAX_TIFF_PAGES} per file")
        offset = ifd[1]
    return max(1, len(seen))


def _tiff(r: _Reader, name: str, page: int) -> Header:
    """The size of page `page`, whose IFD is bounded and checked. The pages
    before it are only stepped over: `tiff_page_first` lets a decoder open
    the page directly, without parsing them."""
    layout = _tiff_layout(r, name)
    offset, seen = layout.first_ifd, set()
    for _ in range(page):
        ifd = _ifd(r, layout, offset) if offset not in seen else None
        if ifd is None:
            raise InputError(name, f"TIFF has no page {page}")
        seen.add(offset)
        offset = ifd[1]
    where = f"TIFF page {page}"
    ifd = _ifd(r, layout, offset)
    if ifd is None:
        raise _corrupt(name, "TIFF", f"{where}: its directory lies outside the file")
    tags, blocks = _tiff_tags(r, layout, offset, ifd[0], name, where)
    _check_blocks(tags, blocks, name, where)
    return Header(
        "TIFF", tags.get(_WIDTH, 0), tags.get(_HEIGHT, 0), ifd_offset=offset, orientation=tags.get(_ORIENTATION, 1)
    )


def tiff_page_first(data: bytes, header: Header) -> bytes:
    """`data` with its first-page pointer set to the page `header` describes,
    so that a decoder reads that page as page 0 and parses no other page."""
    layout = _tiff_layout(_Reader(io.BytesIO(data), len(data)), "")
    if header.ifd_offset == layout.first_ifd:
        return data
    patched = bytearray(data)
    if layout.big:
        struct.pack_into(layout.endian + "Q", patched, 8, header.ifd_offset)
    else:
        struct.pack_into(layout.endian + "I", patched, 4, header.ifd_offset)
    return bytes(patched)


def _tiff_tags(
    r: _Reader, layout: _TiffLayout, offset: int, entries: int, name: str, where: str
) -> Tuple[Dict[int, int], Dict[int, int]]:
    """The IFD's single-number tags and the lengths of its strip / tile
    tables; refuses structures no decoder should walk."""
    if entries > MAX_TIFF_TAGS:
        raise _corrupt(name, "TIFF", f"{where} has {entries} tags, more than {MAX_TIFF_TAGS}")
    start = offset + (8 if layout.big else 2)
    raw = r.at(start, entries * layout.entry_size)
    if len(raw) < entries * layout.entry_size:
        raise _corrupt(name, "TIFF", f"{where}: its directory runs past the end of the file")
    entry = layout.endian + ("HHQ8s" if layout.big else "HHI4s")
    scalars: Dict[int, int] = {}
    blocks: Dict[int, int] = {}
    for tag, kind, count, value in struct.iter_unpack(entry, raw):
        type_size = _TIFF_TYPE_SIZES.get(kind)
        if type_size is None:
            continue  # decoders skip tags of unknown types
        length = count * type_size
        if length > r.size:
            raise _corrupt(name, "TIFF", f"{where}: tag {tag} claims {count} values, more than the file holds")
        inline = 8 if layout.big else 4
        if length > inline and struct.unpack(layout.endian + ("Q" if layout.big else "I"), value)[0] + length > r.size:
            raise _corrupt(name, "TIFF", f"{where}: the values of tag {tag} lie past the end of the file")
        if kind not in _TIFF_BYTE_TYPES and count > MAX_TIFF_VALUES:
            raise _corrupt(name, "TIFF", f"{where}: tag {tag} has {count} values, more than {MAX_TIFF_VALUES}")
        if tag in _BLOCK_TAGS:
            blocks[tag] = count
        if count == 1 and kind in (3, 4, 16):  # SHORT, LONG, LONG8 held in the entry itself
            fmt = {3: "H", 4: "I", 16: "Q"}[kind]
            scalars[tag] = struct.unpack_from(layout.endian + fmt, value)[0]
    return scalars, blocks


def _check_blocks(scalars: Dict[int, int], blocks: Dict[int, int], name: str, where: str) -> None:
    """Refuses strip or tile tables longer than the page's size allows."""
    width, height = scalars.get(_WIDTH, 0), scalars.get(_HEIGHT, 0)
    planes = scalars.get(_SAMPLES, 1) if scalars.get(_PLANAR, 1) == 2 else 1
    tile_w, tile_h = scalars.get(_TILE_WIDTH, 0), scalars.get(_TILE_HEIGHT, 0)
    tiled = _TILE_OFFSETS in blocks
    if tiled and tile_w > 0 and tile_h > 0:
        fit = planes * -(-width // tile_w) * -(-height // tile_h)
    else:
        fit = planes * max(height, 1)  # a strip holds at least one row
    for tag, count in blocks.items():
        if count > fit:
            what = "tiles" if tag in (_TILE_OFFSETS, _TILE_COUNTS) else "strips"
            raise _corrupt(
                name, "TIFF", f"{where} lists {count} {what} for a {width}x{height} image (at most {fit} can be used)"
            )


# --- BMP, WebP, PNM, Sun raster ----------------------------------------------


def _bmp(r: _Reader, name: str, page: int) -> Header:
    head = r.at(14, 12)
    if len(head) < 8:
        raise _corrupt(name, "BMP", "the file ends inside its header")
    info_size = struct.unpack("<I", head[:4])[0]
    if info_size == 12:  # OS/2 BITMAPCOREHEADER
        width, height = struct.unpack("<HH", head[4:8])
    elif len(head) >= 12:
        width, height = struct.unpack("<ii", head[4:12])
    else:
        raise _corrupt(name, "BMP", "the file ends inside its header")
    return Header("BMP", width, abs(height))  # a negative height stores the rows top-down


def _webp(r: _Reader, name: str, page: int) -> Header:
    head = r.at(0, 30)
    if len(head) < 30 or head[8:12] != b"WEBP":
        raise InputError(name, "not an image posepipe can read (unknown format, or a corrupt header)")
    kind = head[12:16]
    if kind == b"VP8X":
        if head[20] & 0x02:
            raise InputError(name, "animated WebP images are not supported: give one frame as an image")
        return Header("WEBP", int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1)
    if kind == b"VP8L" and head[20] == 0x2F:
        bits = struct.unpack("<I", head[21:25])[0]
        return Header("WEBP", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if kind == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", head[26:30])
        return Header("WEBP", width & 0x3FFF, height & 0x3FFF)
    raise _corrupt(name, "WebP", f"unknown first chunk {kind!r}")


# One whitespace byte or one comment per repetition: linear, whatever the input.
_PNM = re.compile(rb"P[1-6](?:\s|#[^\r\n]*[\r\n])+(\d+)(?:\s|#[^\r\n]*[\r\n])+(\d+)\s")


def _pnm(r: _Reader, name: str, page: int) -> Header:
    match = _PNM.match(r.at(0, _PNM_HEADER_BYTES))
    if match is None:
        raise _corrupt(name, "PNM", f"no width and height in its first {_PNM_HEADER_BYTES} bytes")
    return Header("PNM", int(match.group(1)), int(match.group(2)))


def _sun(r: _Reader, name: str, page: int) -> Header:
    head = r.at(4, 8)
    if len(head) < 8:
        raise _corrupt(name, "Sun raster", "the file ends inside its header")
    width, height = struct.unpack(">II", head)
    return Header("SUN", width, height)


_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both byte orders
_PARSERS = (
    (b"\xff\xd8\xff", _jpeg),
    (b"\x89PNG\r\n\x1a\n", _png),
    *((magic, _tiff) for magic in _TIFF_MAGIC),
    (b"BM", _bmp),
    (b"RIFF", _webp),
    (b"\x59\xa6\x6a\x95", _sun),
    *((b"P" + str(n).encode(), _pnm) for n in range(1, 7)),
)

# Formats recognised only to name them in the refusal.
_UNSUPPORTED = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"8BPS", "Photoshop (PSD)"),
    (b"%PDF", "PDF"),
    (b"\x76\x2f\x31\x01", "OpenEXR"),
    (b"#?RADIANCE", "Radiance HDR"),
    (b"#?RGBE", "Radiance HDR"),
    (b"PF", "PFM"),
    (b"Pf", "PFM"),
    (b"P7", "PAM"),
)
