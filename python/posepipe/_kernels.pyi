"""posepipe's C++ kernels. Every function releases the GIL while it computes
and raises ValueError naming the offending argument. `num_threads`: 0 uses
every core (capped by the work items), 1 runs on the calling thread."""
from typing import Sequence, Tuple

import numpy as np
import numpy.typing as npt

U8Image = npt.NDArray[np.uint8]  # HxW, HxWx1, HxWx3 (BGR) or HxWx4 (BGRA)
F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I32 = npt.NDArray[np.int32]

def normalize_batch(
    images: Sequence[npt.NDArray[np.uint8]],
    out_h: int,
    out_w: int,
    mean: Sequence[float],
    std: Sequence[float],
    is_scale: bool,
    to_rgb: bool = False,
    num_threads: int = 0,
) -> F32:
    """The detector input: float32[N, 3, out_h, out_w], image i normalized
    as PaddleX's NormalizeImage computes it (float32 (x * scale/std) + -mean/std,
    is_scale: scale = 1/255) and permuted to CHW at the top-left of a zero canvas.

    The images are uint8 HxWx3 that are already converted and resized (by
    cv2.cvtColor and cv2.resize, the calls PaddleX makes, so resampling is
    OpenCV's own) and at most out_h x out_w. to_rgb swaps the planes of BGR
    input. Work is split into row bands, so one image uses every thread too."""

def topdown_matrices(
    centers: npt.ArrayLike, scales: npt.ArrayLike, out_w: int, out_h: int, use_udp: bool, inverse: bool = False
) -> F64:
    """float64[P, 2, 3] crop matrices (image -> crop; crop -> image when
    inverse) for centres and scales [P, 2] (w, h), equal to PaddleX's
    get_affine_transform(center, scale, 0, (out_w, out_h)) (only the scale's
    width counts), or with use_udp its float32 get_warp_matrix(0, center * 2,
    (out_w - 1, out_h - 1), scale). UDP divides in float32 when centers and
    scales are float32 arrays, in float64 otherwise, as NumPy does in PaddleX.
    A zero-width box gives the all-zero matrix cv2.getAffineTransform returns."""

def warp_crops(
    images: Sequence[U8Image],
    image_index: npt.ArrayLike,
    matrices: npt.ArrayLike,
    out_w: int,
    out_h: int,
    mean: Sequence[float],
    std: Sequence[float],
    is_scale: bool,
    to_rgb: bool,
    num_threads: int = 0,
) -> F32:
    """float32[P, 3, out_h, out_w]: crop p is cv2.warpAffine(images[image_index[p]],
    matrices[p], (out_w, out_h), INTER_LINEAR, zero border) as OpenCV 4.10
    computes it (PaddleX's pinned version), then Normalize and CHW. An all-zero
    matrix fills the crop with pixel (0, 0), as OpenCV does; a non-finite one
    samples only the border."""

def multiclass_nms(
    boxes: F32,
    scores: F32,
    score_threshold: float,
    nms_top_k: int,
    keep_top_k: int,
    iou_threshold: float,
    normalized: bool = True,
    background_label: int = -1,
    nms_eta: float = 1.0,
    num_threads: int = 0,
) -> Tuple[F32, I32]:
    """Paddle's multiclass_nms3 on boxes float32[N, M, 4] (x1, y1, x2, y2) and
    scores float32[N, C, M]: (float32[R, 6] rows (class, score, x1, y1, x2, y2),
    int32[N] rows per image). Within an image rows are grouped by class
    (ascending) and sorted by score within a class, as Paddle emits them."""

def decode_heatmaps(
    heatmaps: F32,
    centers: npt.ArrayLike,
    scales: npt.ArrayLike,
    use_dark: bool = True,
    blur_kernel: int = 3,
    num_threads: int = 0,
) -> F32:
    """PaddleX's KptPostProcess.get_final_preds for heatmaps float32[N, K, H, W]
    and the crops' centres/scales [N, 2]: float32[N, K, 3] (x, y, maxval) in
    image coordinates, bit-identical to PaddleX (which returns float32 too).
    The input is not modified."""

def flip_back(heatmaps_flipped: F32, flip_pairs: npt.ArrayLike, shift: bool, num_threads: int = 0) -> F32:
    """PaddleX's flip_back: mirror along W, swap each (left, right) pair in
    order; with shift, PP-TinyPose's one-pixel shift (out[..., 1:] = out[..., :-1])."""

def average_flip(
    heatmaps: F32, heatmaps_flipped: F32, flip_pairs: npt.ArrayLike, shift: bool, num_threads: int = 0
) -> F32:
    """(heatmaps + flip_back(heatmaps_flipped, flip_pairs, shift)) * 0.5, fused."""
