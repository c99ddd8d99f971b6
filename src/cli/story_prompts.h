// The story openings the demo and `sim live` send to the fleet's
// TinyStories-sized models, one after another.
#pragma once

#include <array>

namespace idlefleet::cli {

inline constexpr std::array<const char*, 5> kStoryPrompts = {
    "Once upon a time", "The little dog", "One day, a girl named Lily", "Tom and his mom went to the park",
    "The sun was shining and"};

}  // namespace idlefleet::cli
