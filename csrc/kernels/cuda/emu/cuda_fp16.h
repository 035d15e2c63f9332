#pragma once
// CPU stand-in for the CUDA toolkit header (see cuda_emu.h)
#include "cuda_emu.h"
