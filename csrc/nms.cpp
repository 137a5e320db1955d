#include "nms.h"

#include <algorithm>
#include <cstdint>
#include <utility>

namespace posepipe {

namespace {

float box_area(const float* b, bool normalized) {
  if (b[2] < b[0] || b[3] < b[1]) return 0.f;
  const float w = b[2] - b[0], h = b[3] - b[1];
  return normalized ? w * h : (w + 1) * (h + 1);
}

// Paddle's JaccardOverlap in float (areas precomputed, same values); 0/0 (two
// empty boxes) stays NaN, which then fails `<= threshold` and suppresses, as in Paddle.
float iou(const float* a, const float* b, float area_a, float area_b, bool normalized) {
  if (b[0] > a[2] || b[2] < a[0] || b[1] > a[3] || b[3] < a[1]) return 0.f;
  const float norm = normalized ? 0.f : 1.f;
  const float iw = std::min(a[2], b[2]) - std::max(a[0], b[0]) + norm;
  const float ih = std::min(a[3], b[3]) - std::max(a[1], b[1]) + norm;
  const float inter = iw * ih;
  return inter / (area_a + area_b - inter);
}

template <class Pair>
bool by_score_desc(const Pair& a, const Pair& b) {
  return a.first > b.first;
}

// The order std::stable_sort(by_score_desc) gives a list built in index order.
bool by_score_then_index(const std::pair<float, int>& a, const std::pair<float, int>& b) {
  return a.first > b.first || (!(b.first > a.first) && a.second < b.second);
}

}  // namespace

int multiclass_nms_image(const float* boxes, const float* scores, int C, int M, const NmsParams& p,
                         std::vector<float>& rows) {
  std::vector<std::vector<int>> kept(C);
  std::vector<std::pair<float, int>> order;
  std::vector<float> area(M);
  for (int i = 0; i < M; ++i) area[i] = box_area(boxes + static_cast<size_t>(i) * 4, p.normalized);
  int total = 0;
  for (int c = 0; c < C; ++c) {
    if (c == p.background_label) continue;
    const float* s = scores + static_cast<size_t>(c) * M;
    order.clear();
    for (int i = 0; i < M; ++i)
      if (s[i] > p.score_threshold) order.emplace_back(s[i], i);
    // Only the first nms_top_k of the stable order are needed.
    const size_t top = p.nms_top_k > -1 ? std::min<size_t>(p.nms_top_k, order.size()) : order.size();
    std::partial_sort(order.begin(), order.begin() + top, order.end(), by_score_then_index);
    order.resize(top);
    float threshold = p.iou_threshold;
    std::vector<int>& sel = kept[c];
    for (const auto& cand : order) {
      const float* box = boxes + static_cast<size_t>(cand.second) * 4;
      bool keep = true;
      for (int j : sel)
        if (!(iou(box, boxes + static_cast<size_t>(j) * 4, area[cand.second], area[j], p.normalized) <= threshold)) {
          keep = false;
          break;
        }
      if (keep) {
        sel.push_back(cand.second);
        if (p.nms_eta < 1 && threshold > 0.5f) threshold *= p.nms_eta;
      }
    }
    total += static_cast<int>(sel.size());
  }

  if (p.keep_top_k > -1 && total > p.keep_top_k) {
    // Global top keep_top_k by score (stable over class order, then NMS order),
    // regrouped by class as Paddle's std::map does.
    std::vector<std::pair<float, int64_t>> all;  // (score, c * M + index)
    for (int c = 0; c < C; ++c)
      for (int i : kept[c]) all.emplace_back(scores[static_cast<size_t>(c) * M + i], int64_t{c} * M + i);
    std::stable_sort(all.begin(), all.end(), by_score_desc<std::pair<float, int64_t>>);
    all.resize(p.keep_top_k);
    for (auto& k : kept) k.clear();
    for (const auto& e : all) kept[e.second / M].push_back(static_cast<int>(e.second % M));
    total = p.keep_top_k;
  }

  for (int c = 0; c < C; ++c)
    for (int i : kept[c]) {
      const float* b = boxes + static_cast<size_t>(i) * 4;
      rows.insert(rows.end(), {static_cast<float>(c), scores[static_cast<size_t>(c) * M + i], b[0], b[1], b[2], b[3]});
    }
  return total;
}

}  // namespace posepipe
