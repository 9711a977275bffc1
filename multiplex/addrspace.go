package multiplex

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/llmux/llmux/engine"
)

// runtimeHeadroom is the address space a load leaves, under a limit, for
// what the estimate does not count: llama.cpp's compute buffers and the Go
// runtime's own growth.
const runtimeHeadroom = 64 << 20

// checkAddressSpace refuses a load that would not fit in what is left of
// the process's address-space limit (a replica under
// --replica-memory-limit). Past the limit llama.cpp's allocations fail
// cleanly, but the Go runtime's abort the process; a load that took the
// last of the address space could leave the runtime to fail, so the load
// fails first, with the sizes in its error. need is the model's estimated
// weights and KV cache. Without a limit, or where the process's size
// cannot be read, it allows the load.
func checkAddressSpace(need int64) error {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_AS, &lim); err != nil || lim.Cur == unix.RLIM_INFINITY {
		return nil
	}
	used, ok := vmSize()
	if !ok {
		return nil
	}
	left := int64(lim.Cur) - used
	if need+runtimeHeadroom > left {
		return fmt.Errorf("the model needs about %d MiB (weights and KV cache) and %d MiB more to run; the process's memory limit leaves %d MiB: %w",
			need>>20, runtimeHeadroom>>20, max(left, 0)>>20, engine.ErrOutOfMemory)
	}
	return nil
}

// vmSize is this process's virtual size in bytes, from /proc/self/status.
func vmSize() (int64, bool) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmSize:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err == nil
		}
	}
	return 0, false
}
