package api

// Apply folds a watch event into st: a snapshot replaces it, a sandbox
// is added or replaces the one of its name, a removal drops one, and the
// config error and outbound status are replaced.
func (st *Status) Apply(ev Event) {
	switch {
	case ev.Snapshot != nil:
		*st = *ev.Snapshot
	case ev.Sandbox != nil:
		for i := range st.Sandboxes {
			if st.Sandboxes[i].Name == ev.Sandbox.Name {
				st.Sandboxes[i] = *ev.Sandbox
				return
			}
		}
		st.Sandboxes = append(st.Sandboxes, *ev.Sandbox)
	case ev.Removed != "":
		for i := range st.Sandboxes {
			if st.Sandboxes[i].Name == ev.Removed {
				st.Sandboxes = append(st.Sandboxes[:i], st.Sandboxes[i+1:]...)
				return
			}
		}
	case ev.Config != nil:
		st.ConfigError = *ev.Config
	case ev.Outbound != nil:
		st.Outbound = ev.Outbound
	}
}
