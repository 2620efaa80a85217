package daemon

import (
	"errors"
	"slices"
	"strconv"
	"time"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/cluster/meshreport"
	"github.com/sbx-dev/sbx/daemon/api"
)

// routeState folds a check into what status shows. initial is the check
// of an apply (its writes are the connect's, not repairs).
func routeState(prev *api.RouteState, rs *cluster.RouteStatus, err error, now time.Time, initial bool) *api.RouteState {
	st := &api.RouteState{}
	if prev != nil {
		*st = *prev
	}
	st.CheckedAt = now
	if err == nil && rs == nil {
		err = errors.New("no route status")
	}
	if err != nil {
		st.Error = err.Error()
		if re := (*cluster.RoutesRefusedError)(nil); errors.As(err, &re) {
			// Not a failed check: the cluster's routing changed so that
			// sbx's routes cannot apply (a Gateway API route took the
			// Service over, say); keyed requests reach the baseline.
			st.Keyed, st.Message = api.KeyedBaseline, re.Error()
			return st
		}
		if st.Keyed == "" {
			st.Keyed = api.KeyedBaseline
			st.Message = "the routes could not be checked"
		}
		return st
	}
	st.Error = ""
	st.Ports, st.Warnings = rs.Report, rs.Warnings
	if len(rs.Changed) > 0 && !initial {
		st.Restored++
		st.RestoredAt = now
		st.RestoredIn = slices.Clone(rs.Changed)
	}
	st.Keyed, st.Message = api.KeyedSandbox, ""
	rank := map[string]int{api.KeyedSandbox: 0, api.KeyedPartial: 1, api.KeyedBaseline: 2}
	for _, p := range rs.Report {
		for _, v := range p.Views {
			if rank[v.Keyed] > rank[st.Keyed] {
				st.Keyed = v.Keyed
				st.Message = viewMessage(p, v)
			}
		}
	}
	return st
}

// viewMessage says where keyed requests do not reach the sandbox.
func viewMessage(p meshreport.PortReport, v meshreport.ViewReport) string {
	who := "from namespace " + v.Clients
	if v.Clients == "" {
		who = "from other namespaces"
	}
	what := "reach the baseline"
	if v.Keyed == api.KeyedPartial {
		what = "partly reach the baseline"
	}
	msg := "keyed requests to " + p.Service + "." + p.Namespace + ":" + strconv.Itoa(int(p.Port)) + " " + who + " " + what
	if v.Reason != "" {
		msg += ": " + v.Reason
	}
	return msg
}
