#include "engine/page_buffer.h"

#include <sys/mman.h>

#include <utility>

namespace idlefleet::engine {

namespace {
constexpr size_t kHugePageBytes = size_t{2} << 20;
}

PageBuffer::PageBuffer(size_t bytes) {
  if (bytes == 0) return;
  const size_t mapped = (bytes + kHugePageBytes - 1) / kHugePageBytes * kHugePageBytes;
  void* p = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return;
  madvise(p, mapped, MADV_HUGEPAGE);  // advisory: ignored where THP is off
  data_ = static_cast<uint8_t*>(p);
  bytes_ = bytes;
  mapped_ = mapped;
}

PageBuffer::~PageBuffer() {
  if (data_ != nullptr) munmap(data_, mapped_);
}

PageBuffer::PageBuffer(PageBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      bytes_(std::exchange(other.bytes_, 0)),
      mapped_(std::exchange(other.mapped_, 0)) {}

PageBuffer& PageBuffer::operator=(PageBuffer&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) munmap(data_, mapped_);
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
    mapped_ = std::exchange(other.mapped_, 0);
  }
  return *this;
}

}  // namespace idlefleet::engine
