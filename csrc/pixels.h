// Pixel loads as 4-lane float vectors (B, G, R, x), shared by the resamplers.
// Integer arithmetic on 8-bit pixels with OpenCV's fixed-point weights stays
// below 2^24, so doing it in float is exact and lets one SSE/NEON register
// carry all channels of a pixel.
#pragma once

#include <cstdint>
#include <cstring>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace posepipe {

typedef float v4f __attribute__((vector_size(16)));
typedef uint8_t v4u8 __attribute__((vector_size(4)));

inline v4f splat(float v) { return v4f{v, v, v, v}; }

// The first three channels of pixel p of a CH-channel row of `width` pixels
// (grey replicated); never reads past the row.
template <int CH>
inline v4f load_px(const uint8_t* row, int p, int width) {
  const uint8_t* q = row + p * CH;
  if (CH == 1) return splat(q[0]);
  int32_t bytes;
  if (CH == 4 || p + 1 < width)
    std::memcpy(&bytes, q, 4);
  else
    bytes = q[0] | q[1] << 8 | q[2] << 16;
#if defined(__SSE2__)
  const __m128i zero = _mm_setzero_si128();
  const __m128i b = _mm_unpacklo_epi8(_mm_cvtsi32_si128(bytes), zero);
  return (v4f)_mm_cvtepi32_ps(_mm_unpacklo_epi16(b, zero));
#else
  v4u8 u;
  std::memcpy(&u, &bytes, 4);
  return __builtin_convertvector(u, v4f);
#endif
}

}  // namespace posepipe
