#pragma once
#include "convjit/conv2d_desc.hpp"
#include "convjit/device_buffer.hpp"
#include "convjit/error.hpp"
#include "convjit/runtime.hpp"
#include "convjit/version.hpp"
