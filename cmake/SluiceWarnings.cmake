# Warnings for sluice's own targets. -Werror comes only from SLUICE_WERROR (CI), through a
# build-only interface target that is never installed or exported, so users never inherit it.
add_library(sluice_warnings INTERFACE)
target_compile_options(sluice_warnings INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wno-sign-conversion>
  $<$<BOOL:${SLUICE_WERROR}>:-Werror>)

# Generated FlatBuffers headers are not ours to fix; include them as system headers.
function(sluice_use_warnings target)
  target_link_libraries(${target} PRIVATE $<BUILD_INTERFACE:sluice_warnings>)
endfunction()
