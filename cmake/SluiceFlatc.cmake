# sluice_flatc(<target> <schema.fbs>...): flatc turns each schema (relative to the current source
# dir) into <name>_generated.h in the build tree at build time, and <target> includes it (as a
# system header: generated code is not ours to fix). Nothing generated is committed.
include_guard(GLOBAL)

function(sluice_flatc target)
  set(gen_dir ${CMAKE_CURRENT_BINARY_DIR}/${target}_flatc)
  set(headers)
  foreach(schema ${ARGN})
    get_filename_component(name ${schema} NAME_WE)
    set(out ${gen_dir}/${name}_generated.h)
    add_custom_command(
      OUTPUT ${out}
      COMMAND ${FLATC} --cpp --scoped-enums -o ${gen_dir} ${CMAKE_CURRENT_SOURCE_DIR}/${schema}
      DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/${schema}
      COMMENT "flatc ${schema}"
      VERBATIM)
    list(APPEND headers ${out})
  endforeach()
  target_sources(${target} PRIVATE ${headers})
  target_include_directories(${target} SYSTEM PRIVATE ${gen_dir})
endfunction()
