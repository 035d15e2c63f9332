"""pybonsai's CUDA 12 backend: ggml's CUDA backend module (libggml-cuda.so) for pybonsai.

Importing this package loads nothing; pybonsai.gpu finds it, checks the driver, preloads NVIDIA's
runtime libraries and then loads LIBRARY (see pybonsai.gpu.status()).
"""
from pathlib import Path

__version__ = "0.1.0"  # equals the pybonsai version it was built with

CUDA_MAJOR = 12                 # runtime major version the plugin links (libcudart.so.12)
MIN_DRIVER_VERSION = 12000      # cuDriverGetVersion() encoding (1000*major + 10*minor): CUDA 12.0
                                # (R525+) runs any 12.x build through minor-version compatibility
LIBRARY = "libggml-cuda.so"
# Loaded before LIBRARY, in this order: (namespace dir under site-packages/nvidia, file, wheel).
RUNTIME_LIBRARIES = (
    ("cuda_runtime/lib", "libcudart.so.12", "nvidia-cuda-runtime-cu12"),
    ("cublas/lib", "libcublasLt.so.12", "nvidia-cublas-cu12"),
    ("cublas/lib", "libcublas.so.12", "nvidia-cublas-cu12"),
)

try:  # written by CMake at build time
    from ._build_info import CUDA_ARCHITECTURES, CUDA_TOOLKIT_VERSION, LLAMA_CPP_COMMIT
except ImportError:  # a source checkout, not a built wheel
    LLAMA_CPP_COMMIT = CUDA_TOOLKIT_VERSION = CUDA_ARCHITECTURES = None


def library_path() -> Path:
    """The backend module shipped in this package."""
    return Path(__file__).resolve().parent / LIBRARY
