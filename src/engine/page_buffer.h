// PageBuffer: an anonymous, page-aligned allocation backed by transparent
// huge pages where the kernel allows (madvise), for the engine's repacked
// weights. Streaming a gigabyte of weights per token through 4 KiB pages
// costs a TLB miss every 4 KiB; 2 MiB pages all but remove them.
//
// Thread-safety: a value type; the bytes may be read from any thread.
#pragma once

#include <cstddef>
#include <cstdint>

namespace idlefleet::engine {

class PageBuffer {
 public:
  PageBuffer() = default;
  // Zero-filled; bytes == 0 gives an empty buffer. Returns an empty buffer
  // (data() == nullptr) when the allocation fails.
  explicit PageBuffer(size_t bytes);
  ~PageBuffer();
  PageBuffer(PageBuffer&& other) noexcept;
  PageBuffer& operator=(PageBuffer&& other) noexcept;
  PageBuffer(const PageBuffer&) = delete;
  PageBuffer& operator=(const PageBuffer&) = delete;

  uint8_t* data() const { return data_; }
  size_t size() const { return bytes_; }

 private:
  uint8_t* data_ = nullptr;
  size_t bytes_ = 0;
  size_t mapped_ = 0;
};

}  // namespace idlefleet::engine
