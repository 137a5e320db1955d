// Paddle's multiclass_nms3 (CPU kernel semantics) for one image.
#pragma once

#include <vector>

namespace posepipe {

struct NmsParams {
  float score_threshold;
  int nms_top_k;   // candidates per class after the threshold; -1 keeps all
  int keep_top_k;  // detections per image; -1 keeps all
  float iou_threshold;
  bool normalized;  // false: areas and overlaps count the +1 pixel
  int background_label;
  float nms_eta;
};

// boxes[M][4] (x1, y1, x2, y2), scores[C][M] -> rows of (class, score, x1, y1,
// x2, y2) appended to `rows`, grouped by class in ascending order and by
// descending score within a class, as Paddle emits them. Returns the row count.
int multiclass_nms_image(const float* boxes, const float* scores, int C, int M, const NmsParams& p,
                         std::vector<float>& rows);

}  // namespace posepipe
