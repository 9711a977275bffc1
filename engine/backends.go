package engine

/*
#include <stdlib.h>
#include "ggml-backend.h"
*/
import "C"

// BackendDevice is one device of a ggml backend that loaded: the CPU
// backend linked into llmux, or a GPU backend found at run time in
// lib/ollama beside the executable (see scripts/build-cuda.sh).
type BackendDevice struct {
	Backend     string // the backend's registry name: "CPU", "CUDA", ...
	Name        string // "CPU", "CUDA0", ...
	Description string
	Type        string // cpu, gpu, igpu or accel
	Free, Total uint64 // memory in bytes, as the backend reports it
}

// Backends loads ggml's backends (once per process, as LoadModel does) and
// lists the registries that loaded and their devices.
func Backends() (backends []string, devices []BackendDevice) {
	initBackend()
	for i := range C.ggml_backend_reg_count() {
		backends = append(backends, C.GoString(C.ggml_backend_reg_name(C.ggml_backend_reg_get(i))))
	}
	for i := range C.ggml_backend_dev_count() {
		dev := C.ggml_backend_dev_get(i)
		var free, total C.size_t
		C.ggml_backend_dev_memory(dev, &free, &total)
		d := BackendDevice{
			Backend:     C.GoString(C.ggml_backend_reg_name(C.ggml_backend_dev_backend_reg(dev))),
			Name:        C.GoString(C.ggml_backend_dev_name(dev)),
			Description: C.GoString(C.ggml_backend_dev_description(dev)),
			Free:        uint64(free),
			Total:       uint64(total),
		}
		switch C.ggml_backend_dev_type(dev) {
		case C.GGML_BACKEND_DEVICE_TYPE_CPU:
			d.Type = "cpu"
		case C.GGML_BACKEND_DEVICE_TYPE_GPU:
			d.Type = "gpu"
		case C.GGML_BACKEND_DEVICE_TYPE_IGPU:
			d.Type = "igpu"
		default:
			d.Type = "accel"
		}
		devices = append(devices, d)
	}
	return backends, devices
}
