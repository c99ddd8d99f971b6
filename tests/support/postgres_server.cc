#include "support/postgres_server.h"

#include <libpq-fe.h>
#include <pwd.h>
#include <sqlite3.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "support/process_util.h"

namespace idlefleet::testing {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kInitdbTimeoutMs = 120'000;
constexpr int64_t kReadyTimeoutMs = 60'000;
constexpr int64_t kStopGraceMs = 10'000;
// Raise when initdb's options change: older templates are then not used.
constexpr const char* kTemplateFormat = "2";

// /usr/lib/postgresql/<highest version>/bin, or "" when none is installed.
std::string find_bin_dir() {
  std::error_code ec;
  int best = -1;
  std::string dir;
  for (const auto& entry : fs::directory_iterator("/usr/lib/postgresql", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || !std::all_of(name.begin(), name.end(), ::isdigit) || name.size() > 4) continue;
    const int version = std::stoi(name);
    if (version > best && fs::exists(entry.path() / "bin" / "postgres")) {
      best = version;
      dir = (entry.path() / "bin").string();
    }
  }
  return dir;
}

}  // namespace

transport::ProcessOptions PostgresServer::as_server_user(const std::string& program,
                                                         std::vector<std::string> args) const {
  transport::ProcessOptions o;
  o.stdout_path = log_path_;
  o.stderr_path = log_path_;
  // A PostgreSQL program by name, anything else by its path.
  const std::string path = program.starts_with("/") ? program : bin_dir_ + "/" + program;
  if (drop_to_postgres_) {
    o.program = "setpriv";
    o.args = {"--reuid=postgres", "--regid=postgres", "--init-groups", path};
    o.args.insert(o.args.end(), args.begin(), args.end());
  } else {
    o.program = path;
    o.args = std::move(args);
  }
  return o;
}

Result<std::unique_ptr<PostgresServer>> PostgresServer::start() {
  std::unique_ptr<PostgresServer> server(new PostgresServer());
  server->bin_dir_ = find_bin_dir();
  if (server->bin_dir_.empty()) {
    return Unexpected(ErrorCode::kNotFound,
                      "no PostgreSQL server in /usr/lib/postgresql/*/bin (scripts/bootstrap installs postgresql-15)");
  }
  std::string tmpl = (fs::temp_directory_path() / "idlefleet-pg-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) return Unexpected(ErrorCode::kIo, "cannot create a temporary directory");
  server->work_dir_ = tmpl;
  server->log_path_ = server->work_dir_ + "/postgres.log";
  if (::geteuid() == 0) {
    const passwd* pw = ::getpwnam("postgres");
    if (pw == nullptr) {
      return Unexpected(ErrorCode::kNotFound,
                        "running as root, and PostgreSQL refuses root, but there is no 'postgres' user to run it as "
                        "(Debian's postgresql-15 package creates one)");
    }
    server->drop_to_postgres_ = true;
    if (::chown(server->work_dir_.c_str(), pw->pw_uid, pw->pw_gid) != 0) {
      return Unexpected(ErrorCode::kIo, "cannot give " + server->work_dir_ + " to the postgres user");
    }
  }
  // The log is created by the server's user so that it can append to it.
  {
    std::ofstream(server->log_path_).flush();
    if (server->drop_to_postgres_) {
      const passwd* pw = ::getpwnam("postgres");
      if (::chown(server->log_path_.c_str(), pw->pw_uid, pw->pw_gid) != 0) {
        return Unexpected(ErrorCode::kIo, "cannot give the log to the postgres user");
      }
    }
  }
  IF_RETURN_IF_ERROR(server->make_data_dir());
  // A free port may be taken before the server binds it: try a few.
  Status launched;
  for (int attempt = 0; attempt < 3; ++attempt) {
    auto port = transport::free_loopback_port();
    if (!port) return Unexpected(port.error());
    server->port_ = *port;
    launched = server->launch();
    if (launched) return server;
  }
  return Unexpected(launched.error());
}

// initdb takes about a second, a copy of the cluster it made a tenth of that,
// and every test process starts a server. The first server on a machine
// makes a template cluster under a name that holds the binaries' version, the
// server's user and kTemplateFormat; the rest copy it. A template is published
// by rename(), so that a half-made one is never seen; two processes racing to
// make it both succeed, and one's copy is thrown away.
Status PostgresServer::make_data_dir() {
  const std::string version = fs::path(bin_dir_).parent_path().filename().string();
  const std::string user = drop_to_postgres_ ? "postgres" : std::to_string(::geteuid());
  const fs::path tmpl = fs::temp_directory_path() / ("idlefleet-pg-template-" + version + "-" + user + "-" + kTemplateFormat);
  auto run = [&](const std::string& program, std::vector<std::string> args, const char* what) -> Status {
    auto p = transport::Process::spawn(as_server_user(program, std::move(args)));
    if (!p) return Unexpected(p.error());
    const auto status = p->wait(kInitdbTimeoutMs);
    if (status == 0) return {};
    return Unexpected(ErrorCode::kIo, std::string(what) + " " +
                                          (status ? "exited " + std::to_string(*status) : std::string("did not finish")) +
                                          "; the log ends:\n" + log_tail());
  };
  std::error_code ec;
  if (!fs::exists(tmpl / "PG_VERSION", ec)) {
    const std::string staging = tmpl.string() + ".staging-" + std::to_string(::getpid());
    fs::remove_all(staging, ec);
    IF_RETURN_IF_ERROR(run("initdb",
                           {"-D", staging, "-U", "idlefleet", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync",
                            "--wal-segsize=1"},  // 1 MB WAL segments: less to copy per server
                           "initdb"));
    if (::rename(staging.c_str(), tmpl.c_str()) != 0) fs::remove_all(staging, ec);  // another process was first
  }
  return run("/bin/cp", {"-a", tmpl.string(), work_dir_ + "/data"}, "copying the template cluster");
}

Status PostgresServer::launch() {
  auto p = transport::Process::spawn(as_server_user(
      "postgres", {"-D", work_dir_ + "/data", "-p", std::to_string(port_), "-k", "", "-c",
                   "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200", "-c",
                   "shared_buffers=16MB"}));
  if (!p) return Unexpected(p.error());
  process_.emplace(std::move(*p));
  const std::string conninfo = url();
  const bool up = eventually(
      [&] { return !process_->running() || PQping(conninfo.c_str()) == PQPING_OK; }, kReadyTimeoutMs, 20);
  if (up && process_->running()) return {};
  process_->stop(kStopGraceMs);
  process_.reset();
  return Unexpected(ErrorCode::kIo, "postgres on port " + std::to_string(port_) + " did not come up; its log (" +
                                        log_path_ + ") ends:\n" + log_tail());
}

PostgresServer::~PostgresServer() {
  if (process_) {
    // SIGINT is PostgreSQL's fast shutdown.
    process_->signal(SIGINT);
    if (!process_->wait(kStopGraceMs)) process_->stop(0);
    process_.reset();
  }
  if (!work_dir_.empty()) {
    std::error_code ec;
    fs::remove_all(work_dir_, ec);
  }
}

std::string PostgresServer::url(const std::string& database) const {
  return "postgresql://idlefleet@127.0.0.1:" + std::to_string(port_) + "/" + database;
}

Result<std::string> PostgresServer::query(const std::string& database, const std::string& sql) {
  PGconn* conn = PQconnectdb(url(database).c_str());
  if (PQstatus(conn) != CONNECTION_OK) {
    std::string why = PQerrorMessage(conn);
    PQfinish(conn);
    return Unexpected(ErrorCode::kIo, "connecting to " + url(database) + ": " + why);
  }
  PGresult* res = PQexec(conn, sql.c_str());
  const ExecStatusType st = PQresultStatus(res);
  std::string out;
  Status s;
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
    s = Unexpected(ErrorCode::kIo, sql + ": " + PQresultErrorMessage(res));
  } else if (st == PGRES_TUPLES_OK && PQnfields(res) > 0) {
    for (int row = 0; row < PQntuples(res); ++row) {
      if (row > 0) out += '\n';
      out += PQgetvalue(res, row, 0);
    }
  }
  PQclear(res);
  PQfinish(conn);
  if (!s) return Unexpected(s.error());
  return out;
}

Result<std::string> PostgresServer::create_database(const std::string& name) {
  auto r = query("postgres", "CREATE DATABASE \"" + name + "\"");
  if (!r) return Unexpected(r.error());
  return url(name);
}

void PostgresServer::kill() {
  if (process_) {
    process_->signal(SIGKILL);
    process_->wait(kStopGraceMs);
    process_.reset();
  }
}

Status PostgresServer::restart() {
  if (process_) {
    process_->signal(SIGINT);
    if (!process_->wait(kStopGraceMs)) process_->stop(0);
    process_.reset();
  }
  return launch();
}

std::string PostgresServer::log_tail() const {
  std::ifstream in(log_path_);
  std::stringstream all;
  all << in.rdbuf();
  const std::string text = all.str();
  return text.size() > 2000 ? text.substr(text.size() - 2000) : text;
}

std::string backend_name(const ::testing::TestParamInfo<Backend>& info) {
  return info.param == Backend::kPostgres ? "PostgreSQL" : "SQLite";
}

PostgresServer& postgres() {
  static std::unique_ptr<PostgresServer> server = [] {
    auto s = PostgresServer::start();
    if (!s) {
      ADD_FAILURE() << s.error().to_string();
      std::abort();
    }
    return std::move(*s);
  }();
  return *server;
}

void StoreFixture::start(Backend backend, const std::string& file_name) {
  backend_ = backend;
  file_name_ = file_name;
  const std::string stem = fs::path(file_name).stem().string();
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  // A parameterised test's names hold '/': one directory level, not three.
  std::string name = std::string(info->test_suite_name()) + "-" + info->name();
  std::replace(name.begin(), name.end(), '/', '-');
  dir_ = fs::temp_directory_path() / ("idlefleet-" + stem + "-" + std::to_string(::getpid()) + "-" + name);
  fs::remove_all(dir_);
  fs::create_directories(dir_);
  if (backend_ == Backend::kPostgres) url_ = fresh_postgres_database(stem, &database_);
}

std::string fresh_postgres_database(const std::string& prefix, std::string* name) {
  static int databases = 0;  // several tests in one process share the server
  const std::string db = prefix + "_" + std::to_string(::getpid()) + "_" + std::to_string(++databases);
  auto url = postgres().create_database(db);
  if (!url) {
    ADD_FAILURE() << url.error().to_string();
    std::abort();
  }
  if (name != nullptr) *name = db;
  return *url;
}

void StoreFixture::TearDown() {
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

std::string StoreFixture::raw_sql(const std::string& sql, int column) {
  if (backend_ == Backend::kPostgres) {
    auto r = postgres().query(database_, sql);
    EXPECT_TRUE(r) << r.error().to_string();
    return r ? *r : "";
  }
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open(db_path().c_str(), &db), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  std::string out;
  const char* tail = sql.c_str();
  // Every statement in turn; the last one's first row is the answer.
  while (tail != nullptr && *tail != '\0') {
    sqlite3_finalize(st);
    st = nullptr;
    const int prepared = sqlite3_prepare_v2(db, tail, -1, &st, &tail);
    EXPECT_EQ(prepared, SQLITE_OK) << sqlite3_errmsg(db) << ": " << sql;
    if (prepared != SQLITE_OK || st == nullptr) break;
    out.clear();
    int rc = sqlite3_step(st);
    EXPECT_TRUE(rc == SQLITE_ROW || rc == SQLITE_DONE) << sqlite3_errmsg(db) << ": " << sql;
    if (rc == SQLITE_ROW && sqlite3_column_text(st, column) != nullptr) {
      out = reinterpret_cast<const char*>(sqlite3_column_text(st, column));
    }
    while (rc == SQLITE_ROW) rc = sqlite3_step(st);
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  return out;
}

}  // namespace idlefleet::testing
