// Opening a store on a location (store/location.h): the one place that
// decides between a store's PostgreSQL and SQLite implementations.
//
// Thread-safety: as the stores' own open().
#pragma once

#include <memory>
#include <string>

#include "common/result.h"
#include "store/location.h"

namespace idlefleet::store {

// Pg::open(location) for a postgresql:// URL, else Sqlite::open(location),
// as the interface `Store` both implement.
template <class Store, class Pg, class Sqlite>
Result<std::unique_ptr<Store>> open_store_at(const std::string& location) {
  if (is_postgres_url(location)) {
    auto pg = Pg::open(location);
    if (!pg) return Unexpected(pg.error());
    return std::unique_ptr<Store>(std::move(*pg));
  }
  auto lite = Sqlite::open(location);
  if (!lite) return Unexpected(lite.error());
  return std::unique_ptr<Store>(std::move(*lite));
}

}  // namespace idlefleet::store
