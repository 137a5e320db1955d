// Detector preprocessing, the part OpenCV does not do: PaddleX's Normalize and
// the HWC -> CHW permute of an already resized image onto a zero canvas. The
// colour conversion and the resampling are cv2.cvtColor / cv2.resize, called
// from Python, so they are the very functions PaddleX runs.
#pragma once

#include <cstddef>
#include <cstdint>

namespace posepipe {

// An HWC uint8 image with contiguous rows: 1 (grey), 3 (BGR) or 4 (BGRA) channels.
struct ImageU8 {
  const uint8_t* data = nullptr;
  int height = 0;
  int width = 0;
  int channels = 0;
};

// PaddleX's Normalize evaluates float32(float32(x * alpha) + beta) with
// alpha = scale / std and beta = -mean / std formed in double and then rounded
// to float32; keeping that order is what makes the output bit-identical. With
// 8-bit input that is a table per channel.
struct Normalizer {
  float alpha[3], beta[3];  // per output plane, already rounded to float32
  float lut[3][256];        // alpha * v + beta for every byte value v, per output plane
  bool to_rgb;        // the source is BGR and output plane 0 is R
  Normalizer(const double mean[3], const double std[3], bool is_scale, bool to_rgb);
  int source_channel(int plane) const { return to_rgb ? 2 - plane : plane; }
  // Normalizes one interleaved 3-channel row (source channel order) into the
  // three output planes, `plane_stride` floats apart.
  void write_row(const uint8_t* line, int width, float* out, size_t plane_stride) const;
};

// Writes canvas rows [row_begin, row_end) of out[3][out_h][out_w]: the
// normalized planes of the 3-channel image `img` (at most out_h x out_w) at
// the top-left and 0.0 elsewhere. Taking a row range lets one image be split
// across threads.
void normalize_to_canvas(const ImageU8& img, const Normalizer& norm, float* out, int out_h, int out_w,
                         int row_begin, int row_end);

}  // namespace posepipe
