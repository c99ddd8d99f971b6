# Libraries shared by the command, the tests and the benchmarks.

file(GLOB IDLEFLEET_COMMON_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/common/*.cc)
add_library(idlefleet_common STATIC ${IDLEFLEET_COMMON_SOURCES})
target_include_directories(idlefleet_common PUBLIC ${PROJECT_SOURCE_DIR}/src)

file(GLOB IDLEFLEET_ENGINE_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/engine/*.cc)
add_library(idlefleet_engine STATIC ${IDLEFLEET_ENGINE_SOURCES})
target_link_libraries(idlefleet_engine PUBLIC idlefleet_common Threads::Threads nlohmann_json::nlohmann_json)
# Per-ISA kernels: each file is compiled for its instruction set only and is
# called only after a run-time CPU check (engine/cpu.h).
set_source_files_properties(${PROJECT_SOURCE_DIR}/src/engine/kernels_avx2.cc
  PROPERTIES COMPILE_OPTIONS "-mavx2;-mfma;-mf16c")
set_source_files_properties(${PROJECT_SOURCE_DIR}/src/engine/kernels_avx512.cc
  PROPERTIES COMPILE_OPTIONS "-mavx2;-mfma;-mf16c;-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;-mavx512vnni")

file(GLOB IDLEFLEET_CLI_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/cli/*.cc)
