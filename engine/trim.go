package engine

/*
#include <malloc.h>
*/
import "C"

// trimCHeap hands the C heap's free memory back to the OS (glibc's
// malloc_trim): after models and contexts are freed, glibc keeps their
// memory in its per-thread arenas, and the resident size then says how
// much the allocator holds rather than how much is in use. The leak test
// calls it before each reading (test files cannot use cgo).
func trimCHeap() { C.malloc_trim(0) }
