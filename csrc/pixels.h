// A 4-lane float vector (GCC/Clang vector extension: SSE on x86, NEON on ARM)
// for the heatmap kernels.
#pragma once

namespace posepipe {

typedef float v4f __attribute__((vector_size(16)));

inline v4f splat(float v) { return v4f{v, v, v, v}; }

}  // namespace posepipe
