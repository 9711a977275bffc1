package engine

/*
#include <stdlib.h>
#include "llama.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"slices"
	"unsafe"

	"github.com/llmux/llmux/models"
)

// Adapter is a LoRA adapter loaded for one model. It is freed with the model.
type Adapter struct {
	c     *C.struct_llama_adapter_lora
	path  string
	model *Model
}

// AdapterRef is an adapter applied with a scale.
type AdapterRef struct {
	Adapter *Adapter
	Scale   float32
}

// LoadAdapter loads a LoRA adapter GGUF for this model. Shape mismatches and
// foreign files return errors.
func (m *Model) LoadAdapter(path string) (*Adapter, error) {
	info, err := models.Inspect(path)
	if err != nil {
		return nil, fmt.Errorf("load adapter: %w", err)
	}
	if info.Kind != "adapter" || info.AdapterType != "lora" {
		return nil, fmt.Errorf("load adapter %s: not a LoRA adapter (general.type=%q adapter.type=%q)", path, info.Kind, info.AdapterType)
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	c := C.llama_adapter_lora_init(m.c, cpath)
	if c == nil {
		return nil, fmt.Errorf("load adapter %s: llama.cpp rejected it (architecture or tensor shapes do not match the model)", path)
	}
	a := &Adapter{c: c, path: path, model: m}
	m.adaptersMu.Lock()
	m.adapters = append(m.adapters, a)
	m.adaptersMu.Unlock()
	return a, nil
}

// Path is the file the adapter was loaded from.
func (a *Adapter) Path() string { return a.path }

func (a *Adapter) free() {
	if a.c != nil {
		C.llama_adapter_lora_free(a.c)
		a.c = nil
	}
}

// Unload frees an adapter before the model is closed. No context may still
// apply it.
func (a *Adapter) Unload() {
	m := a.model
	m.adaptersMu.Lock()
	defer m.adaptersMu.Unlock()
	for i, x := range m.adapters {
		if x == a {
			m.adapters = append(m.adapters[:i], m.adapters[i+1:]...)
			break
		}
	}
	a.free()
}

// SetAdapters makes exactly this set of adapters active for the following
// Decodes (nil or empty: the base model). llama.cpp applies adapters to the
// whole context, so sequences with different adapter sets must be decoded in
// different steps.
func (c *Context) SetAdapters(set []AdapterRef) error {
	if slices.Equal(c.adapter, set) {
		return nil
	}
	if !c.opts.LoRA {
		return errors.New("set adapters: context was created without ContextOptions.LoRA")
	}
	C.llama_clear_adapter_lora(c.c)
	for _, r := range set {
		if r.Adapter == nil || r.Adapter.c == nil || r.Adapter.model != c.model {
			C.llama_clear_adapter_lora(c.c)
			c.adapter = nil
			return fmt.Errorf("set adapters: adapter is unloaded or belongs to another model")
		}
		if C.llama_set_adapter_lora(c.c, r.Adapter.c, C.float(r.Scale)) != 0 {
			C.llama_clear_adapter_lora(c.c)
			c.adapter = nil
			return fmt.Errorf("set adapters: llama.cpp refused %s", r.Adapter.path)
		}
	}
	c.adapter = append(c.adapter[:0], set...)
	return nil
}

// Adapters is the active adapter set.
func (c *Context) Adapters() []AdapterRef { return c.adapter }
