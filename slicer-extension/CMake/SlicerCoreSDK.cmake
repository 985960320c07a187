# Find the slicer-core-sdk wheel's CMake package, its ITK 5.4 (Slicer's own ITK) and VTK 9.6.2
# headers, working around what ../shared/notes/slicer.md measured:
#  1. the wheels use the old libstdc++ string ABI;
#  2. ITK's ITKVtkGlue hard-codes the wheel builder's VTK_DIR (pass CMAKE_PREFIX_PATH too);
#  3. the SDK's component check asks for properties of non-Slicer targets: mark those found;
#  4. BaseLogic links libvtkWrappingPythonCore: executables need libpython;
#  5. run-time paths into the wheels.
# Expects -DSlicer_DIR=<site>/slicer_core_sdk/cmake -DVTK_DIR=<vtk-build>/lib/cmake/vtk
# -DCMAKE_PREFIX_PATH=<vtk-build>;<imhost prefix>.
add_compile_definitions(_GLIBCXX_USE_CXX11_ABI=0)
get_filename_component(IMHOST_SLICER_SITE "${Slicer_DIR}/../.." ABSOLUTE)
set(_props "${IMHOST_SLICER_SITE}/slicer_core_sdk/content/cmake/slicer_core_sdk/slicer_core_sdk-vtk-module-properties.cmake")
file(STRINGS "${_props}" _lines REGEX "INTERFACE_vtk_module_(private_|optional_)?depends")
foreach(_line IN LISTS _lines)
  string(REGEX MATCHALL "[A-Za-z0-9_]+::[A-Za-z0-9_]+" _deps "${_line}")
  foreach(_dep IN LISTS _deps)
    if(NOT _dep MATCHES "^Slicer::")
      set("Slicer_${_dep}_FOUND" 1)
    endif()
  endforeach()
endforeach()
find_package(Slicer CONFIG REQUIRED COMPONENTS BaseLogic MRMLCore MRMLLogic SegmentationCore SegmentationsModuleMRML
             SequencesModuleMRML MarkupsModuleMRML)
find_package(VTK REQUIRED COMPONENTS CommonCore CommonDataModel nlohmannjson)
set(ITK_DIR "${IMHOST_SLICER_SITE}/slicer_core_sdk/content/third_party/lib/cmake/ITK-5.4")
find_package(ITK 5.4 REQUIRED COMPONENTS ITKRegistrationMethodsv4 ITKOptimizersv4 ITKMetricsv4 ITKTransform ITKImageGrid
             ITKImageFunction ITKCommon)
find_package(Python3 REQUIRED COMPONENTS Development)
set(IMHOST_SLICER_RPATH "${IMHOST_SLICER_SITE}/slicer_core;${IMHOST_SLICER_SITE}/slicer_core/third_party.libs;${IMHOST_SLICER_SITE}/vtkmodules;${IMHOST_SLICER_SITE}/slicer_core_sdk/content/third_party/lib")
set(CMAKE_BUILD_RPATH "${IMHOST_SLICER_RPATH}")
foreach(_dir IN LISTS IMHOST_SLICER_RPATH)
  add_link_options("-Wl,-rpath-link,${_dir}")
endforeach()
