package daemon

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/cluster/live"
	"github.com/sbx-dev/sbx/daemon/api"
)

// What `sbx list`, `sbx gc` and `sbx disconnect --orphan` do in the
// cluster, apart from the HTTP handlers that call them (server.go).

// deleteOrphan deletes the cluster objects of a sandbox this daemon does
// not own (left by a crashed daemon, or one whose state file was lost). It
// is explicit (?orphan=true) because a sandbox of the same name may belong
// to someone else's laptop.
//
// A sandbox whose Lease another daemon still renews is refused unless
// force: that daemon would recreate it within seconds, and it may be a
// colleague's.
func (d *Daemon) deleteOrphan(ctx context.Context, creq api.ClusterRequest, name string, force bool) (api.DisconnectResult, error) {
	if _, ok := d.mgr.Get(name); ok {
		return api.DisconnectResult{}, &conflictError{fmt.Sprintf("sandbox %s is connected by this daemon; disconnect it without --orphan", name)}
	}
	cl, err := d.mgr.clusters(ctx, creq.KubeconfigSource, creq.Context)
	if err != nil {
		return api.DisconnectResult{}, openError(err)
	}
	found, err := cl.List(ctx, creq.Namespace)
	if d.mgr.stopping(err) {
		return api.DisconnectResult{}, errStopping
	}
	if err != nil {
		return api.DisconnectResult{}, &httpError{http.StatusBadGateway, fmt.Sprintf("list sbx objects in the cluster: %v", err)}
	}
	var matches []cluster.SandboxInfo
	for _, cs := range found {
		if cs.Name == name {
			matches = append(matches, cs)
		}
	}
	if len(matches) > 1 {
		var nss []string
		for _, m := range matches {
			nss = append(nss, m.Namespace)
		}
		return api.DisconnectResult{}, &conflictError{fmt.Sprintf("sandbox %s exists in several namespaces (%s); pass -n NAMESPACE to pick one", name, strings.Join(nss, ", "))}
	}
	for _, cs := range matches {
		if !cs.Expired && !force {
			holder := cs.Holder
			if holder == "" {
				holder = "another sbx daemon"
			}
			return api.DisconnectResult{}, &conflictError{fmt.Sprintf(
				"sandbox %s in namespace %s is no orphan: %s renews its Lease (it expires in %s unless renewed), and that daemon would recreate it; disconnect it there, or wait until its Lease expires; --force deletes it anyway",
				name, cs.Namespace, holder, time.Until(cs.Expires).Round(time.Second))}
		}
		ref := cs.Ref()
		if creq.Namespace != "" {
			// Where the user may work: the sandbox's objects there.
			ref.Namespaces = []string{creq.Namespace}
		}
		if err := cl.Delete(ctx, ref); d.mgr.stopping(err) {
			return api.DisconnectResult{}, &stoppingError{fmt.Sprintf("the sbx daemon is stopping, so some objects of sandbox %s may remain in namespace %s: run `sbx disconnect %s --orphan` again (it starts a new daemon)", name, cs.Namespace, name)}
		} else if err != nil {
			// The cluster's error carries the hint its cause calls for.
			return api.DisconnectResult{}, &httpError{http.StatusBadGateway, fmt.Sprintf("delete the objects of sandbox %s in namespace %s: %v", name, cs.Namespace, err)}
		}
		d.log.Info("orphan sandbox deleted", "sandbox", name, "namespace", cs.Namespace, "routingKey", cs.RoutingKey)
		return api.DisconnectResult{Disconnected: []string{name}}, nil
	}
	return api.DisconnectResult{}, &notFoundError{name}
}

// list is what `sbx list` shows: this daemon's sandboxes, and with
// withCluster the sbx objects found in the cluster creq names (orphans
// marked) and the routes no live sandbox owns.
func (d *Daemon) list(ctx context.Context, creq api.ClusterRequest, withCluster bool) (api.ListResult, error) {
	st := d.store.Status()
	byName := map[string]*api.ListEntry{}
	res := api.ListResult{Sandboxes: []api.ListEntry{}}
	for _, sb := range st.Sandboxes {
		e := api.ListEntry{Name: sb.Name, RoutingKey: sb.RoutingKey, Phase: sb.Phase, InDaemon: true}
		if s, ok := d.mgr.Get(sb.Name); ok {
			e.Namespace = s.snapshot().Namespace
		}
		res.Sandboxes = append(res.Sandboxes, e)
	}
	for i := range res.Sandboxes {
		byName[res.Sandboxes[i].Name+"/"+res.Sandboxes[i].RoutingKey] = &res.Sandboxes[i]
	}
	if withCluster {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		found, err := func() ([]cluster.SandboxInfo, error) {
			cl, err := d.mgr.clusters(ctx, creq.KubeconfigSource, creq.Context)
			if err != nil {
				return nil, openError(err)
			}
			found, err := cl.List(ctx, creq.Namespace)
			if err != nil {
				return nil, err
			}
			if rs, ok := cl.(RouteSweeper); ok {
				left, lerr := rs.Leftovers(ctx, creq.Namespace)
				if lerr != nil {
					d.log.Warn("looking for dead routes failed", "err", lerr)
				}
				res.Leftovers = left
			}
			return found, nil
		}()
		if d.mgr.stopping(err) {
			return api.ListResult{}, errStopping
		}
		if err != nil {
			res.ClusterError = fmt.Sprintf("list sbx objects in the cluster: %v", err)
		}
		for _, cs := range found {
			if e, ok := byName[cs.Name+"/"+cs.RoutingKey]; ok {
				e.InCluster = true
				e.LeaseExpires, e.Holder = cs.Expires, cs.Holder
				if cs.Namespace != "" {
					e.Namespace = cs.Namespace
				}
				continue
			}
			res.Sandboxes = append(res.Sandboxes, api.ListEntry{
				Name: cs.Name, RoutingKey: cs.RoutingKey, Namespace: cs.Namespace,
				InCluster: true, Orphan: cs.Expired, Holder: cs.Holder, LeaseExpires: cs.Expires,
			})
		}
	}
	return res, nil
}

// openError is the answer to a one-shot request (list, gc, disconnect
// --orphan) whose cluster could not be opened.
func openError(err error) error {
	return &httpError{http.StatusBadGateway, live.RequestError(err).Error()}
}

// gc deletes the sandboxes whose Lease expired in the cluster creq
// names (after renewing this daemon's own) and the routes of sandboxes
// that are gone.
func (d *Daemon) gc(ctx context.Context, req api.GCRequest) (api.GCResult, error) {
	creq := req.ClusterRequest
	cl, err := d.mgr.clusters(ctx, creq.KubeconfigSource, creq.Context)
	if err != nil {
		return api.GCResult{}, openError(err)
	}
	// Our own sandboxes are never garbage, even when their lease lapsed
	// while the cluster was unreachable: renew them first.
	current := currentContext(creq.KubeconfigSource)
	for _, name := range d.mgr.Names() {
		s, ok := d.mgr.Get(name)
		if !ok {
			continue
		}
		sv := s.snapshot()
		if !sameCluster(sv.KubeconfigSource, sv.Context, creq, current) {
			continue
		}
		if err := cl.RenewLease(ctx, sv.ref()); err != nil {
			d.log.Debug("renewing before gc failed", "sandbox", name, "err", err)
		}
	}
	rep, err := cl.GC(ctx, creq.Namespace, req.DryRun)
	if d.mgr.stopping(err) {
		return api.GCResult{}, &stoppingError{"the sbx daemon is stopping and broke off gc; some expired sandboxes may remain: run `sbx gc` again (it starts a new daemon)"}
	}
	if err != nil {
		return api.GCResult{}, &httpError{http.StatusBadGateway, fmt.Sprintf("collect expired sandboxes: %v", err)}
	}
	res := api.GCResult{Deleted: []string{}, Grace: rep.Grace, DryRun: req.DryRun}
	res.Deleted = append(res.Deleted, rep.Deleted...)
	for _, w := range rep.Waiting {
		res.Waiting = append(res.Waiting, api.GCWaiting{Name: w.Name, Namespace: w.Namespace, Holder: w.Holder,
			LeaseExpired: w.Expires, CollectableAt: w.Expires.Add(rep.Grace)})
	}
	if rs, ok := cl.(RouteSweeper); ok {
		// Routes the collector cannot reach: those of sandboxes whose
		// Lease is gone, inside VirtualServices CD owns.
		sweep := rs.SweepRoutes
		if req.DryRun {
			sweep = rs.Leftovers
		}
		res.Routes, err = sweep(ctx, creq.Namespace)
		if d.mgr.stopping(err) {
			return api.GCResult{}, &stoppingError{"the sbx daemon is stopping and broke off gc; some dead routes may remain: run `sbx gc` again (it starts a new daemon)"}
		}
		if err != nil {
			return api.GCResult{}, &httpError{http.StatusBadGateway, fmt.Sprintf("remove the routes of sandboxes that are gone: %v", err)}
		}
	}
	return res, nil
}
