package scheduler

import (
	"fmt"
	"slices"

	"github.com/llmux/llmux/engine"
)

// AdapterSpec is a LoRA adapter a scheduler can serve: a GGUF adapter file
// for its model and the scale to apply it with (0: 1).
type AdapterSpec struct {
	Path  string
	Scale float32
}

// adaptersEnabled tells whether this scheduler may serve adapters; its
// engine context then switches adapter sets, and so runs with llama.cpp's
// graph reuse off (see engine.ContextOptions.LoRA). A scheduler without
// adapters keeps graph reuse.
func (o Options) adaptersEnabled() bool {
	return len(o.Adapters) > 0 || o.LookupAdapter != nil
}

// adapterSpec finds a named adapter: in Options.Adapters, else through
// Options.LookupAdapter (adapters registered after the scheduler started).
func (s *Scheduler) adapterSpec(name string) (AdapterSpec, bool) {
	if a, ok := s.opts.Adapters[name]; ok {
		return a, true
	}
	if s.opts.LookupAdapter != nil {
		return s.opts.LookupAdapter(name)
	}
	return AdapterSpec{}, false
}

// adapterGroup is an adapter set the loop has loaded: the planner's group
// id for it (also its KV namespace) and what the engine applies.
type adapterGroup struct {
	id  int
	set []engine.AdapterRef
}

// group returns the group of the adapter called name ("" is the base
// model, group 0), loading the adapter the first time it is asked for.
// Adapters are loaded lazily, in the loop (which owns the model's adapters
// as it owns the context), and once per scheduler: a LoRA of a small model
// loads in milliseconds, and a server with many registered adapters pays
// only for those in use. A failed load is not cached, so a file fixed on
// disk is loaded by the next request.
func (s *Scheduler) group(name string) (int, error) {
	if name == "" {
		return 0, nil
	}
	if g, ok := s.adapters[name]; ok {
		return g.id, nil
	}
	spec, ok := s.adapterSpec(name)
	if !ok {
		return 0, fmt.Errorf("adapter %q is not known to this model", name)
	}
	a, err := s.be.loadAdapter(spec.Path)
	if err != nil {
		return 0, fmt.Errorf("adapter %q: %w", name, err)
	}
	scale := spec.Scale
	if scale == 0 {
		scale = 1
	}
	s.nextGroup++
	g := &adapterGroup{id: s.nextGroup, set: []engine.AdapterRef{{Adapter: a, Scale: scale}}}
	s.adapters[name] = g
	s.groupSets[g.id] = g.set
	names := append(slices.Clone(s.counters.Adapters), name)
	slices.Sort(names)
	s.counters.Adapters = names
	s.opts.Logger.Info("scheduler: adapter loaded", "adapter", name, "path", spec.Path, "scale", scale)
	return g.id, nil
}

// useGroup makes group g's adapter set the engine's, when it is not
// already: the context switches only when the set changes between steps.
func (s *Scheduler) useGroup(g int) error {
	if g == s.curGroup {
		return nil
	}
	if err := s.ctx.SetAdapters(s.groupSets[g]); err != nil {
		s.curGroup = -1 // unknown: set it again next time
		return err
	}
	s.curGroup = g
	s.counters.AdapterSwitches++
	return nil
}

// trackGroups keeps LastRun for the planner: a group that gets work starts
// its clock now; a group without work is forgotten.
func (s *Scheduler) trackGroups(views []SeqView, step uint64) {
	for g := range s.groupLast {
		s.groupSeen[g] = false
	}
	for _, v := range views {
		if _, ok := s.groupLast[v.Group]; !ok {
			s.groupLast[v.Group] = step
		}
		s.groupSeen[v.Group] = true
	}
	for g, seen := range s.groupSeen {
		if !seen {
			delete(s.groupLast, g)
			delete(s.groupSeen, g)
		}
	}
}
