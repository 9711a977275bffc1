package engine

/*
#include <stdlib.h>
#include "llmux_engine.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"math"
	"unsafe"
)

// ChatMessage is one message for a chat template.
type ChatMessage struct {
	Role    string
	Content string
}

// ErrNoTemplate is returned when a model has no chat template, or one
// llama.cpp's built-in template engine does not recognize.
var ErrNoTemplate = errors.New("no supported chat template")

// ApplyChatTemplate renders messages with tmpl (a Jinja template from GGUF
// metadata, recognized by llama.cpp among its built-in formats such as
// ChatML, Llama 2/3, Mistral, Gemma, Phi, ...). addAssistant ends the text
// with the assistant turn's opening.
func ApplyChatTemplate(tmpl string, msgs []ChatMessage, addAssistant bool) (string, error) {
	if tmpl == "" {
		return "", ErrNoTemplate
	}
	ctmpl := C.CString(tmpl)
	defer C.free(unsafe.Pointer(ctmpl))
	n := len(msgs)
	cmsgs := (*C.struct_llama_chat_message)(C.calloc(C.size_t(max(n, 1)), C.sizeof_struct_llama_chat_message))
	defer C.free(unsafe.Pointer(cmsgs))
	view := unsafe.Slice(cmsgs, max(n, 1))
	size := 64
	for i, m := range msgs {
		view[i].role = C.CString(m.Role)
		view[i].content = C.CString(m.Content)
		size += 2*(len(m.Role)+len(m.Content)) + 64
	}
	defer func() {
		for i := range msgs {
			C.free(unsafe.Pointer(view[i].role))
			C.free(unsafe.Pointer(view[i].content))
		}
	}()
	var cerr [256]C.char
	for {
		buf := make([]byte, size)
		got := C.llmux_chat_apply_template(ctmpl, cmsgs, C.size_t(n), C.bool(addAssistant), (*C.char)(unsafe.Pointer(&buf[0])), C.int32_t(len(buf)), &cerr[0], C.int(len(cerr)))
		if got == math.MinInt32 {
			return "", fmt.Errorf("chat template: llama.cpp: %s", C.GoString(&cerr[0]))
		}
		if got < 0 {
			return "", ErrNoTemplate
		}
		if int(got) <= len(buf) {
			return string(buf[:got]), nil
		}
		size = int(got)
	}
}
