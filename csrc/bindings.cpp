// pybind11 glue only: argument checks, output allocation, GIL release.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <array>
#include <string>
#include <vector>

#include "affine.h"
#include "heatmap.h"
#include "nms.h"
#include "parallel.h"
#include "preprocess.h"

namespace py = pybind11;
using namespace posepipe;

namespace {

constexpr auto kC = py::array::c_style;

[[noreturn]] void fail(const std::string& name, const std::string& what) {
  throw py::value_error(name + ": " + what);
}

std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

py::array as_array(py::handle obj, const std::string& name) {
  py::array a = py::array::ensure(obj);
  if (!a) fail(name, "expected an array, got " + std::string(py::str(py::type::of(obj))));
  return a;
}

// `dims` holds the expected size of each axis, -1 for any.
void check_shape(const py::array& a, const std::string& name, const std::vector<py::ssize_t>& dims) {
  bool ok = a.ndim() == static_cast<py::ssize_t>(dims.size());
  for (size_t i = 0; ok && i < dims.size(); ++i) ok = dims[i] < 0 || a.shape(i) == dims[i];
  if (!ok) {
    std::string want = "(";
    for (size_t i = 0; i < dims.size(); ++i)
      want += (i ? ", " : "") + (dims[i] < 0 ? std::string("*") : std::to_string(dims[i]));
    fail(name, "expected shape " + want + (dims.size() == 1 ? ",)" : ")") + ", got " + shape_str(a));
  }
}

// Big inputs must already have the right dtype: a silent conversion would hide
// a caller bug and cost a copy. Non-contiguous ones are copied.
template <class T>
py::array_t<T, kC> exact(py::handle obj, const std::string& name, const std::vector<py::ssize_t>& dims) {
  py::array a = as_array(obj, name);
  if (!a.dtype().is(py::dtype::of<T>()))
    fail(name, "expected dtype " + std::string(py::str(py::dtype::of<T>())) + ", got " +
                   std::string(py::str(a.dtype())));
  check_shape(a, name, dims);
  return py::array_t<T, kC>::ensure(a);
}

// Small geometric inputs: any real (or, for `integral`, integer) dtype, converted.
template <class T>
py::array_t<T, kC> converted(py::handle obj, const std::string& name, const std::vector<py::ssize_t>& dims,
                             bool integral = false) {
  py::array a = as_array(obj, name);
  const char kind = a.dtype().kind();
  if (integral ? !(kind == 'i' || kind == 'u') : !(kind == 'f' || kind == 'i' || kind == 'u'))
    fail(name, std::string("expected ") + (integral ? "an integer" : "a real") + " dtype, got " +
                   std::string(py::str(a.dtype())));
  check_shape(a, name, dims);
  return py::array_t<T, kC | py::array::forcecast>::ensure(a);
}

struct Images {
  std::vector<py::array_t<uint8_t, kC>> keep;  // holds the buffers while the GIL is released
  std::vector<ImageU8> views;
};

// `three_channels_only`: HxWx3 only (what normalize_batch takes); otherwise
// HxW or HxWxC with C = 1, 3 or 4 (what warp_crops takes).
ImageU8 image_view(py::handle obj, const std::string& name, py::array_t<uint8_t, kC>& keep, bool three_channels_only) {
  py::array a = as_array(obj, name);
  if (!a.dtype().is(py::dtype::of<uint8_t>()))
    fail(name, "expected a uint8 image, got dtype " + std::string(py::str(a.dtype())));
  const bool sized = (a.ndim() == 2 || a.ndim() == 3) && a.shape(0) > 0 && a.shape(1) > 0;
  if (three_channels_only) {
    if (!sized || a.ndim() != 3 || a.shape(2) != 3)
      fail(name, "expected an HxWx3 image (H, W >= 1), got shape " + shape_str(a));
  } else if (!sized || (a.ndim() == 3 && a.shape(2) != 1 && a.shape(2) != 3 && a.shape(2) != 4)) {
    fail(name, "expected an HxW or HxWxC image (C = 1, 3 or 4, H, W >= 1), got shape " + shape_str(a));
  }
  keep = py::array_t<uint8_t, kC>::ensure(a);
  return {keep.data(), static_cast<int>(a.shape(0)), static_cast<int>(a.shape(1)),
          a.ndim() == 2 ? 1 : static_cast<int>(a.shape(2))};
}

Images image_list(const py::sequence& seq, const std::string& name, bool three_channels_only = false) {
  if (py::isinstance<py::array>(seq)) fail(name, "expected a list of images, got one array");
  Images out;
  out.keep.resize(seq.size());
  for (size_t i = 0; i < seq.size(); ++i)
    out.views.push_back(
        image_view(seq[i], name + "[" + std::to_string(i) + "]", out.keep[i], three_channels_only));
  return out;
}

std::array<double, 3> triple(const std::vector<double>& v, const std::string& name) {
  if (v.size() != 3) fail(name, "expected 3 values, got " + std::to_string(v.size()));
  return {v[0], v[1], v[2]};
}

Normalizer make_normalizer(const std::vector<double>& mean, const std::vector<double>& stdv, bool is_scale,
                           bool to_rgb) {
  const auto m = triple(mean, "mean"), s = triple(stdv, "std");
  return Normalizer(m.data(), s.data(), is_scale, to_rgb);
}

void check_positive(int v, const char* name) {
  if (v < 1) fail(name, "must be >= 1, got " + std::to_string(v));
}

// Splits every image into row bands and runs them on the threads, so that a
// single large image still uses every thread.
void run_normalize(const std::vector<ImageU8>& imgs, const Normalizer& norm, float* out, int out_h, int out_w,
                   int num_threads) {
  if (imgs.empty()) return;
  const int n = static_cast<int>(imgs.size());
  const int threads = resolve_threads(num_threads, static_cast<int64_t>(n) * out_h);
  const int per_image = std::max(1, (threads + n - 1) / n);
  const int bands = std::min(per_image, std::max(1, out_h / 16));
  const size_t stride = static_cast<size_t>(3) * out_h * out_w;
  parallel_for(static_cast<int64_t>(n) * bands, threads, [&](int64_t t) {
    const int64_t i = t / bands, b = t % bands;
    normalize_to_canvas(imgs[i], norm, out + i * stride, out_h, out_w, static_cast<int>(out_h * b / bands),
                        static_cast<int>(out_h * (b + 1) / bands));
  });
}

py::array_t<float> normalize_batch_py(const py::sequence& images, int out_h, int out_w,
                                      const std::vector<double>& mean, const std::vector<double>& stdv,
                                      bool is_scale, bool to_rgb, int num_threads) {
  check_positive(out_h, "out_h");
  check_positive(out_w, "out_w");
  const Normalizer norm = make_normalizer(mean, stdv, is_scale, to_rgb);
  Images imgs = image_list(images, "images", /*three_channels_only=*/true);
  for (size_t i = 0; i < imgs.views.size(); ++i) {
    const ImageU8& img = imgs.views[i];
    if (img.height > out_h || img.width > out_w)
      fail("images[" + std::to_string(i) + "]", std::to_string(img.height) + "x" + std::to_string(img.width) +
                                                    " is larger than the " + std::to_string(out_h) + "x" +
                                                    std::to_string(out_w) + " canvas");
  }
  const py::ssize_t n = static_cast<py::ssize_t>(imgs.views.size());
  py::array_t<float, kC> batch({n, py::ssize_t{3}, py::ssize_t{out_h}, py::ssize_t{out_w}});
  float* out = batch.mutable_data();
  {
    py::gil_scoped_release release;
    run_normalize(imgs.views, norm, out, out_h, out_w, num_threads);
  }
  return batch;
}

py::array_t<double> topdown_matrices_py(py::handle centers, py::handle scales, int out_w, int out_h, bool use_udp,
                                        bool inverse) {
  check_positive(out_w, "out_w");
  check_positive(out_h, "out_h");
  const py::array ca = as_array(centers, "centers");
  const bool f32 = ca.dtype().is(py::dtype::of<float>()) && as_array(scales, "scales").dtype().is(py::dtype::of<float>());
  auto c = converted<double>(centers, "centers", {-1, 2});
  auto s = converted<double>(scales, "scales", {-1, 2});
  const py::ssize_t p = c.shape(0);
  if (s.shape(0) != p) fail("scales", "expected " + std::to_string(p) + " rows like centers, got " + std::to_string(s.shape(0)));
  py::array_t<double, kC> out({p, py::ssize_t{2}, py::ssize_t{3}});
  const double *cd = c.data(), *sd = s.data();
  double* od = out.mutable_data();
  {
    py::gil_scoped_release release;
    for (py::ssize_t i = 0; i < p; ++i)
      topdown_matrix(cd[2 * i], cd[2 * i + 1], sd[2 * i], sd[2 * i + 1], out_w, out_h, use_udp, inverse, f32,
                     od + 6 * i);
  }
  return out;
}

py::array_t<float> warp_crops_py(const py::sequence& images, py::handle image_index, py::handle matrices, int out_w,
                                 int out_h, const std::vector<double>& mean, const std::vector<double>& stdv,
                                 bool is_scale, bool to_rgb, int num_threads) {
  check_positive(out_w, "out_w");
  check_positive(out_h, "out_h");
  const Normalizer norm = make_normalizer(mean, stdv, is_scale, to_rgb);
  Images imgs = image_list(images, "images");
  auto idx = converted<int32_t>(image_index, "image_index", {-1}, true);
  auto mats = converted<double>(matrices, "matrices", {idx.shape(0), 2, 3});
  const py::ssize_t p = idx.shape(0);
  for (py::ssize_t i = 0; i < p; ++i)
    if (idx.at(i) < 0 || idx.at(i) >= static_cast<int32_t>(imgs.views.size()))
      fail("image_index", "entry " + std::to_string(i) + " is " + std::to_string(idx.at(i)) + ", but there are " +
                              std::to_string(imgs.views.size()) + " images");
  py::array_t<float, kC> out({p, py::ssize_t{3}, py::ssize_t{out_h}, py::ssize_t{out_w}});
  const int32_t* id = idx.data();
  const double* md = mats.data();
  float* od = out.mutable_data();
  const size_t stride = static_cast<size_t>(3) * out_h * out_w;
  {
    py::gil_scoped_release release;
    parallel_for(p, num_threads,
                 [&](int64_t i) { warp_crop(imgs.views[id[i]], md + 6 * i, out_w, out_h, norm, od + i * stride); });
  }
  return out;
}

py::tuple multiclass_nms_py(py::handle boxes, py::handle scores, float score_threshold, int nms_top_k, int keep_top_k,
                            float iou_threshold, bool normalized, int background_label, float nms_eta,
                            int num_threads) {
  auto b = exact<float>(boxes, "boxes", {-1, -1, 4});
  auto s = exact<float>(scores, "scores", {b.shape(0), -1, b.shape(1)});
  const int n = static_cast<int>(b.shape(0)), m = static_cast<int>(b.shape(1)), c = static_cast<int>(s.shape(1));
  const NmsParams params{score_threshold, nms_top_k, keep_top_k, iou_threshold, normalized, background_label, nms_eta};
  std::vector<std::vector<float>> rows(n);
  py::array_t<int32_t, kC> counts(py::ssize_t{n});
  int32_t* cd = counts.mutable_data();
  const float *bd = b.data(), *sd = s.data();
  {
    py::gil_scoped_release release;
    parallel_for(n, num_threads, [&](int64_t i) {
      cd[i] = multiclass_nms_image(bd + i * static_cast<size_t>(m) * 4, sd + i * static_cast<size_t>(c) * m, c, m,
                                   params, rows[i]);
    });
  }
  py::ssize_t total = 0;
  for (const auto& r : rows) total += static_cast<py::ssize_t>(r.size() / 6);
  py::array_t<float, kC> out({total, py::ssize_t{6}});
  float* od = out.mutable_data();
  for (const auto& r : rows) od = std::copy(r.begin(), r.end(), od);
  return py::make_tuple(out, counts);
}

py::array_t<float> decode_heatmaps_py(py::handle heatmaps, py::handle centers, py::handle scales, bool use_dark,
                                      int blur_kernel, int num_threads) {
  auto hm = exact<float>(heatmaps, "heatmaps", {-1, -1, -1, -1});
  const py::ssize_t n = hm.shape(0), k = hm.shape(1), h = hm.shape(2), w = hm.shape(3);
  if (h < 1 || w < 1) fail("heatmaps", "expected maps of at least 1x1, got shape " + shape_str(hm));
  auto c = converted<double>(centers, "centers", {n, 2});
  auto s = converted<double>(scales, "scales", {n, 2});
  if (use_dark && (blur_kernel < 3 || blur_kernel % 2 == 0))
    fail("blur_kernel", "expected an odd size >= 3, got " + std::to_string(blur_kernel));
  const std::vector<double> gauss = use_dark ? gaussian_kernel(blur_kernel) : std::vector<double>();
  py::array_t<float, kC> out({n, k, py::ssize_t{3}});
  const float* hd = hm.data();
  const double *cd = c.data(), *sd = s.data();
  float* od = out.mutable_data();
  {
    py::gil_scoped_release release;
    parallel_for(n, num_threads, [&](int64_t i) {
      decode_person(hd + i * k * h * w, static_cast<int>(k), static_cast<int>(h), static_cast<int>(w), cd[2 * i],
                    cd[2 * i + 1], sd[2 * i], sd[2 * i + 1], use_dark, gauss, od + i * k * 3);
    });
  }
  return out;
}

// The slot permutation PaddleX's pairwise swaps produce, applied in order.
std::vector<int> flip_permutation(py::handle flip_pairs, int k) {
  auto pairs = converted<int32_t>(flip_pairs, "flip_pairs", {-1, 2}, true);
  std::vector<int> perm(k);
  for (int i = 0; i < k; ++i) perm[i] = i;
  for (py::ssize_t i = 0; i < pairs.shape(0); ++i) {
    const int a = pairs.at(i, 0), b = pairs.at(i, 1);
    if (a < 0 || a >= k || b < 0 || b >= k)
      fail("flip_pairs", "pair " + std::to_string(i) + " (" + std::to_string(a) + ", " + std::to_string(b) +
                             ") is outside the " + std::to_string(k) + " keypoints");
    std::swap(perm[a], perm[b]);
  }
  return perm;
}

py::array_t<float> flip_py(py::handle base, py::handle flipped, py::handle flip_pairs, bool shift, int num_threads) {
  py::array_t<float, kC> b, f;
  if (base.is_none()) {
    f = exact<float>(flipped, "heatmaps_flipped", {-1, -1, -1, -1});
  } else {
    b = exact<float>(base, "heatmaps", {-1, -1, -1, -1});
    f = exact<float>(flipped, "heatmaps_flipped", {b.shape(0), b.shape(1), b.shape(2), b.shape(3)});
  }
  const py::ssize_t n = f.shape(0), k = f.shape(1), h = f.shape(2), w = f.shape(3);
  const std::vector<int> perm = flip_permutation(flip_pairs, static_cast<int>(k));
  py::array_t<float, kC> out({n, k, h, w});
  const float* fd = f.data();
  const float* bd = base.is_none() ? nullptr : b.data();
  float* od = out.mutable_data();
  const size_t stride = static_cast<size_t>(k) * h * w;
  {
    py::gil_scoped_release release;
    parallel_for(n, num_threads, [&](int64_t i) {
      flip_back_person(fd + i * stride, static_cast<int>(k), static_cast<int>(h), static_cast<int>(w), perm.data(),
                       shift, bd ? bd + i * stride : nullptr, od + i * stride);
    });
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(_kernels, m) {
  m.doc() = "posepipe's C++ pre/post-processing kernels (PaddleX/OpenCV-exact).";
  m.def("normalize_batch", &normalize_batch_py, py::arg("images"), py::arg("out_h"), py::arg("out_w"),
        py::arg("mean"), py::arg("std"), py::arg("is_scale"), py::arg("to_rgb") = false, py::arg("num_threads") = 0,
        "PaddleX Normalize + HWC->CHW of already resized uint8 HxWx3 images, each top-left on a zero canvas: "
        "float32[N,3,out_h,out_w].");
  m.def("topdown_matrices", &topdown_matrices_py, py::arg("centers"), py::arg("scales"), py::arg("out_w"),
        py::arg("out_h"), py::arg("use_udp"), py::arg("inverse") = false,
        "PaddleX's top-down crop matrices, float64[P,2,3] (image->crop, or crop->image when inverse).");
  m.def("warp_crops", &warp_crops_py, py::arg("images"), py::arg("image_index"), py::arg("matrices"),
        py::arg("out_w"), py::arg("out_h"), py::arg("mean"), py::arg("std"), py::arg("is_scale"), py::arg("to_rgb"),
        py::arg("num_threads") = 0,
        "cv2.warpAffine (bilinear, zero border, OpenCV 4.10 fixed point) + Normalize + CHW for P crops: "
        "float32[P,3,out_h,out_w].");
  m.def("multiclass_nms", &multiclass_nms_py, py::arg("boxes"), py::arg("scores"), py::arg("score_threshold"),
        py::arg("nms_top_k"), py::arg("keep_top_k"), py::arg("iou_threshold"), py::arg("normalized") = true,
        py::arg("background_label") = -1, py::arg("nms_eta") = 1.0f, py::arg("num_threads") = 0,
        "Paddle's multiclass_nms3: (float32[R,6] rows (class, score, x1, y1, x2, y2), int32[N] rows per image).");
  m.def("decode_heatmaps", &decode_heatmaps_py, py::arg("heatmaps"), py::arg("centers"), py::arg("scales"),
        py::arg("use_dark") = true, py::arg("blur_kernel") = 3, py::arg("num_threads") = 0,
        "PaddleX's KptPostProcess.get_final_preds: float32[N,K,3] (x, y, maxval) in image coordinates.");
  m.def(
      "flip_back",
      [](py::handle flipped, py::handle pairs, bool shift, int num_threads) {
        return flip_py(py::none(), flipped, pairs, shift, num_threads);
      },
      py::arg("heatmaps_flipped"), py::arg("flip_pairs"), py::arg("shift"), py::arg("num_threads") = 0,
      "PaddleX's flip_back (mirror, swap pairs) plus PP-TinyPose's one-pixel shift when shift.");
  m.def(
      "average_flip",
      [](py::handle base, py::handle flipped, py::handle pairs, bool shift, int num_threads) {
        return flip_py(base, flipped, pairs, shift, num_threads);
      },
      py::arg("heatmaps"), py::arg("heatmaps_flipped"), py::arg("flip_pairs"), py::arg("shift"),
      py::arg("num_threads") = 0, "(heatmaps + flip_back(heatmaps_flipped)) * 0.5.");
}
