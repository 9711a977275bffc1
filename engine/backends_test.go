package engine

import (
	"slices"
	"testing"
)

func TestBackendsListsCPU(t *testing.T) {
	regs, devs := Backends()
	if !slices.Contains(regs, "CPU") {
		t.Errorf("backends %v, want CPU among them", regs)
	}
	i := slices.IndexFunc(devs, func(d BackendDevice) bool { return d.Type == "cpu" })
	if i < 0 || devs[i].Backend != "CPU" || devs[i].Name == "" {
		t.Errorf("devices %+v, want a cpu device of the CPU backend", devs)
	}
	for _, d := range devs {
		t.Logf("%s %s %s %s free %d total %d", d.Backend, d.Name, d.Type, d.Description, d.Free, d.Total)
	}
}
