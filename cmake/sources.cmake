# Libraries shared by the command, the tests and the benchmarks. The engine is
# split so that each part builds (and its tests run) with only what it needs.

file(GLOB IDLEFLEET_COMMON_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/common/*.cc)
add_library(idlefleet_common STATIC ${IDLEFLEET_COMMON_SOURCES})
target_include_directories(idlefleet_common PUBLIC ${PROJECT_SOURCE_DIR}/src)
target_link_libraries(idlefleet_common PUBLIC PkgConfig::SODIUM)

# The file format and the weight formats.
add_library(idlefleet_gguf STATIC
  ${PROJECT_SOURCE_DIR}/src/engine/gguf.cc
  ${PROJECT_SOURCE_DIR}/src/engine/quant.cc)
target_link_libraries(idlefleet_gguf PUBLIC idlefleet_common)

# Text in and out: tokenizer, detokenizer, sampler, chat templates, stop strings.
add_library(idlefleet_text STATIC
  ${PROJECT_SOURCE_DIR}/src/engine/tokenizer.cc
  ${PROJECT_SOURCE_DIR}/src/engine/sampler.cc
  ${PROJECT_SOURCE_DIR}/src/engine/chat_template.cc
  ${PROJECT_SOURCE_DIR}/src/engine/stop_strings.cc)
target_link_libraries(idlefleet_text PUBLIC idlefleet_gguf)

# Everything else: kernels, forward pass, sessions, model tools.
file(GLOB IDLEFLEET_ENGINE_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/engine/*.cc)
list(REMOVE_ITEM IDLEFLEET_ENGINE_SOURCES
  ${PROJECT_SOURCE_DIR}/src/engine/gguf.cc
  ${PROJECT_SOURCE_DIR}/src/engine/quant.cc
  ${PROJECT_SOURCE_DIR}/src/engine/tokenizer.cc
  ${PROJECT_SOURCE_DIR}/src/engine/sampler.cc
  ${PROJECT_SOURCE_DIR}/src/engine/chat_template.cc
  ${PROJECT_SOURCE_DIR}/src/engine/stop_strings.cc)
add_library(idlefleet_engine STATIC ${IDLEFLEET_ENGINE_SOURCES})
target_link_libraries(idlefleet_engine PUBLIC idlefleet_text Threads::Threads nlohmann_json::nlohmann_json)
# Per-ISA kernels: each file is compiled for its instruction set only and is
# called only after a run-time CPU check (engine/kernels.h).
set_source_files_properties(${PROJECT_SOURCE_DIR}/src/engine/kernels_avx2.cc
  PROPERTIES COMPILE_OPTIONS "-mavx2;-mfma;-mf16c")
set_source_files_properties(${PROJECT_SOURCE_DIR}/src/engine/kernels_avx512.cc
  PROPERTIES COMPILE_OPTIONS "-mavx2;-mfma;-mf16c;-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;-mavx512vnni")

# The domain without I/O (docs/architecture.md, "Layers"): time and
# randomness are inputs, so the simulator and the tests run the real logic.
file(GLOB IDLEFLEET_CORE_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/core/*.cc)
add_library(idlefleet_core STATIC ${IDLEFLEET_CORE_SOURCES})
target_link_libraries(idlefleet_core PUBLIC idlefleet_common nlohmann_json::nlohmann_json)

# A layer is a static library, or an interface library while it is only headers.
macro(idlefleet_layer name sources_var)
  if(${sources_var})
    add_library(${name} STATIC ${${sources_var}})
    set(${name}_scope PUBLIC)
  else()
    add_library(${name} INTERFACE)
    target_include_directories(${name} INTERFACE ${PROJECT_SOURCE_DIR}/src)
    set(${name}_scope INTERFACE)
  endif()
endmacro()

# Thin wrappers over libnats, the HTTP server (Boost.Beast) and processes;
# nothing domain-specific.
file(GLOB IDLEFLEET_TRANSPORT_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/transport/*.cc)
idlefleet_layer(idlefleet_transport IDLEFLEET_TRANSPORT_SOURCES)
target_link_libraries(idlefleet_transport ${idlefleet_transport_scope} idlefleet_common Boost::headers PkgConfig::NATS
  PkgConfig::SODIUM CURL::libcurl Threads::Threads)

# Persistence behind small interfaces: SQLite (WAL), or PostgreSQL (libpq).
file(GLOB IDLEFLEET_STORE_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/store/*.cc)
idlefleet_layer(idlefleet_store IDLEFLEET_STORE_SOURCES)
target_link_libraries(idlefleet_store ${idlefleet_store_scope} idlefleet_core PkgConfig::SQLITE3 PkgConfig::LIBPQ PkgConfig::SODIUM)

# The shells: they turn I/O into core events and core effects into I/O.
file(GLOB IDLEFLEET_AGENT_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/agent/*.cc)
idlefleet_layer(idlefleet_agent IDLEFLEET_AGENT_SOURCES)
target_link_libraries(idlefleet_agent ${idlefleet_agent_scope} idlefleet_core idlefleet_engine idlefleet_transport
  PkgConfig::SODIUM CURL::libcurl)

# Offline simulations with the real policy and money code (sim/vehicle_month.h).
file(GLOB IDLEFLEET_SIM_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/sim/*.cc)
idlefleet_layer(idlefleet_sim IDLEFLEET_SIM_SOURCES)
target_link_libraries(idlefleet_sim ${idlefleet_sim_scope} idlefleet_core idlefleet_agent PkgConfig::TOMLPP)

# The dashboard's files (web/), compiled in as byte arrays (cmake/embed_web.cmake):
# regenerated when a file changes, and the glob notices files added or removed.
file(GLOB_RECURSE IDLEFLEET_WEB_FILES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/web/*)
set(IDLEFLEET_WEB_ASSETS_CC ${CMAKE_BINARY_DIR}/generated/web_assets.cc)
add_custom_command(OUTPUT ${IDLEFLEET_WEB_ASSETS_CC}
  COMMAND ${CMAKE_COMMAND} -DWEB_DIR=${PROJECT_SOURCE_DIR}/web -DOUT=${IDLEFLEET_WEB_ASSETS_CC}
          -P ${PROJECT_SOURCE_DIR}/cmake/embed_web.cmake
  DEPENDS ${IDLEFLEET_WEB_FILES} ${PROJECT_SOURCE_DIR}/cmake/embed_web.cmake
  COMMENT "Embedding web/ into the coordinator"
  VERBATIM)

file(GLOB IDLEFLEET_COORDINATOR_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/coordinator/*.cc)
list(APPEND IDLEFLEET_COORDINATOR_SOURCES ${IDLEFLEET_WEB_ASSETS_CC})
idlefleet_layer(idlefleet_coordinator IDLEFLEET_COORDINATOR_SOURCES)
target_link_libraries(idlefleet_coordinator ${idlefleet_coordinator_scope} idlefleet_core idlefleet_store idlefleet_transport
  idlefleet_text PkgConfig::SODIUM PkgConfig::TOMLPP)

file(GLOB IDLEFLEET_CLI_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/cli/*.cc)

# The sanitizer build is otherwise -O0, where every intrinsic and every
# iterator is a call: more than half of its slow tests' CPU time went to the
# forward pass and the simulator's inner loops (2026-11-29, perf). Those
# files are optimised there too, still instrumented by both sanitizers: the
# checks are the same, the tests run 2-3 times faster. (A file with its own
# options leaves its unity batch.)
if(IDLEFLEET_SANITIZE)
  foreach(hot engine/kernels.cc engine/kernels_avx2.cc engine/kernels_avx512.cc engine/model.cc
              sim/jobs.cc sim/fleet_scale.cc sim/vehicle_month.cc sim/dst.cc agent/sim_vehicle.cc)
    set_property(SOURCE ${PROJECT_SOURCE_DIR}/src/${hot} APPEND PROPERTY COMPILE_OPTIONS -O2)
  endforeach()
endif()
