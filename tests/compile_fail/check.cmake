# Compiles one file with -fsyntax-only. EXPECT empty: it must compile (the control case). EXPECT
# set: it must fail, and the compiler's output must contain EXPECT (so a file that fails for an
# unrelated reason, e.g. a typo or a missing include, does not pass).
string(REPLACE "|" ";" include_list "${INCLUDES}")
set(flags -std=c++20 -fsyntax-only)
foreach(dir IN LISTS include_list)
  list(APPEND flags "-I${dir}")
endforeach()
execute_process(COMMAND ${CXX} ${flags} ${SRC} RESULT_VARIABLE rc OUTPUT_VARIABLE out
                ERROR_VARIABLE out)
if(EXPECT STREQUAL "")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${SRC} should compile but did not:\n${out}")
  endif()
elseif(rc EQUAL 0)
  message(FATAL_ERROR "${SRC} compiled, but it must not (expected: ${EXPECT})")
else()
  string(FIND "${out}" "${EXPECT}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "${SRC} failed to compile, but not with '${EXPECT}':\n${out}")
  endif()
endif()
