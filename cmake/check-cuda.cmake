# Fails early, naming the missing piece, instead of deep inside ggml-cuda.
find_package(CUDAToolkit QUIET)
if (NOT CUDAToolkit_FOUND)
    message(FATAL_ERROR
        "MULTIMODAL_LM_GPU=cuda: the CUDA Toolkit was not found (no nvcc / CUDA runtime). "
        "Install the CUDA Toolkit (12.x or 13.x) with cuBLAS, or set CUDAToolkit_ROOT, or build with MULTIMODAL_LM_GPU=cpu.")
endif()
if (NOT TARGET CUDA::cublas)
    message(FATAL_ERROR
        "MULTIMODAL_LM_GPU=cuda: CUDA ${CUDAToolkit_VERSION} was found (${CUDAToolkit_NVCC_EXECUTABLE}) but cuBLAS is missing "
        "(no libcublas in ${CUDAToolkit_LIBRARY_DIR}). Install the cuBLAS development package "
        "(e.g. `libcublas-dev-13-0` / `cuda-libraries-dev-13-0` from NVIDIA's repository) or build with MULTIMODAL_LM_GPU=cpu.")
endif()
message(STATUS "multimodal-lm: CUDA ${CUDAToolkit_VERSION} with cuBLAS at ${CUDAToolkit_LIBRARY_DIR}")
