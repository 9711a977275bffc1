package scheduler

import "strings"

// stopMatcher holds back text that could be the start of a stop string, so
// a stop string split across tokens is caught and never leaks into output.
type stopMatcher struct {
	stops []string
	held  string
}

// push adds new text. It returns the text safe to emit now and whether a
// stop string was found (the returned text then ends just before it).
func (m *stopMatcher) push(text string) (string, bool) {
	if len(m.stops) == 0 {
		return text, false
	}
	m.held += text
	first := -1
	for _, s := range m.stops {
		if i := strings.Index(m.held, s); i >= 0 && (first < 0 || i < first) {
			first = i
		}
	}
	if first >= 0 {
		out := m.held[:first]
		m.held = ""
		return out, true
	}
	// Keep the longest suffix that is a prefix of some stop string.
	keep := 0
	for _, s := range m.stops {
		for k := min(len(s)-1, len(m.held)); k > keep; k-- {
			if strings.HasSuffix(m.held, s[:k]) {
				keep = k
				break
			}
		}
	}
	out := m.held[:len(m.held)-keep]
	m.held = m.held[len(m.held)-keep:]
	return out, false
}

// flush returns what is held when the choice ends for another reason.
func (m *stopMatcher) flush() string {
	out := m.held
	m.held = ""
	return out
}
