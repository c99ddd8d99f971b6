// A private PostgreSQL server for the tests that run the stores against a
// real database: initdb into a fresh temporary directory, then `postgres` on
// a free loopback port (no Unix socket), stopped and removed with the object.
//
// PostgreSQL refuses to run as root; when the tests run as root (CI does), the
// server runs as the `postgres` user that Debian's package creates, through
// setpriv (which execs, so signals reach the server itself). fsync is off: a
// killed server loses nothing (the OS still has the pages), only a power loss
// would, and the tests do not cut the power.
//
// The binaries come from /usr/lib/postgresql/<version>/bin (the highest
// version installed); scripts/bootstrap installs postgresql-15.
//
// The stores' tests run one contract against both backends: StoreFixture
// gives each test a fresh directory (SQLite) or a fresh database on the
// process's one server (PostgreSQL), and raw SQL on a connection of its own.
//
// Thread-safety: owned by one thread, which must outlive the server (it is
// started with kill_with_parent; transport/process.h).
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "common/result.h"
#include "transport/process.h"

namespace idlefleet::testing {

class PostgresServer {
 public:
  // initdb and start; returns once the server accepts connections. Errors say
  // what is missing (binaries, the postgres user) or quote the log's end.
  static Result<std::unique_ptr<PostgresServer>> start();
  ~PostgresServer();
  PostgresServer(const PostgresServer&) = delete;
  PostgresServer& operator=(const PostgresServer&) = delete;

  // postgresql://idlefleet@127.0.0.1:PORT/DATABASE
  std::string url(const std::string& database = "postgres") const;
  uint16_t port() const { return port_; }
  // Creates an empty database and returns its URL.
  Result<std::string> create_database(const std::string& name);
  // Runs SQL on `database` as the superuser and returns the first column of
  // the last statement's rows, one line each ("" when there are none).
  Result<std::string> query(const std::string& database, const std::string& sql);

  // SIGKILL, as a crash would.
  void kill();
  // Starts the server again on the same port and data directory (after
  // kill() or on a running server, which is stopped first).
  Status restart();

 private:
  PostgresServer() = default;
  Status launch();
  // work_dir_/data: a copy of a template cluster, made by initdb once per machine.
  Status make_data_dir();
  std::string log_tail() const;
  // The command line for `program` with `args`, through setpriv when root.
  transport::ProcessOptions as_server_user(const std::string& program, std::vector<std::string> args) const;

  std::string bin_dir_;
  std::string work_dir_;
  std::string log_path_;
  bool drop_to_postgres_ = false;
  uint16_t port_ = 0;
  std::optional<transport::Process> process_;
};

// Which implementation a store test runs against.
enum class Backend { kSqlite, kPostgres };
// "SQLite" or "PostgreSQL": the suffix of a parameterised test's name.
std::string backend_name(const ::testing::TestParamInfo<Backend>& info);

// One PostgreSQL server per test process (ctest runs each test in its own),
// started on first use; a server that cannot start fails the test and aborts.
PostgresServer& postgres();

// A fresh, empty database on postgres() for one test ("<prefix>_<pid>_<n>");
// sets *name to its name when given, and returns its URL. Aborts the test
// process when it cannot be made.
std::string fresh_postgres_database(const std::string& prefix, std::string* name = nullptr);

// A fresh directory (SQLite) or database (PostgreSQL) per test, removed
// afterwards (the directory; databases go with the server).
class StoreFixture : public ::testing::Test {
 protected:
  // `file_name` is the SQLite file's name ("jobs.db"); its stem names the
  // directory and, for PostgreSQL, the database (<stem>_<pid>_<n>).
  void start(Backend backend, const std::string& file_name);
  void TearDown() override;

  // The SQLite file (also for PostgreSQL tests, which may need a path).
  std::string db_path() const { return (dir_ / file_name_).string(); }
  // What the store is opened on: the URL or the path.
  std::string location() const { return postgres_backend() ? url_ : db_path(); }
  bool postgres_backend() const { return backend_ == Backend::kPostgres; }

  // Runs SQL on a separate raw connection, as a person with the sqlite3
  // shell or psql would, and returns `column` of the first row (PostgreSQL:
  // the first column of every row, a line each; "" when there are none).
  std::string raw_sql(const std::string& sql, int column = 0);

  Backend backend_ = Backend::kSqlite;
  std::filesystem::path dir_;
  std::string file_name_, database_, url_;
};

}  // namespace idlefleet::testing
