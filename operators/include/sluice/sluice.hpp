// The one header a sluice user includes.
#pragma once

#include "sluice/bytes.hpp"
#include "sluice/codec.hpp"
#include "sluice/flat.hpp"
#include "sluice/flow.hpp"
#include "sluice/run.hpp"
