package controlplane

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// AuditEvent is the part of an audit.k8s.io/v1 Event the tests read.
type AuditEvent struct {
	Stage      string `json:"stage"`
	RequestURI string `json:"requestURI"`
	Verb       string `json:"verb"`
	User       struct {
		Username string   `json:"username"`
		Groups   []string `json:"groups"`
	} `json:"user"`
	ObjectRef *struct {
		Resource    string `json:"resource"`
		Namespace   string `json:"namespace"`
		Name        string `json:"name"`
		APIGroup    string `json:"apiGroup"`
		Subresource string `json:"subresource"`
	} `json:"objectRef"`
	ResponseStatus *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Reason  string `json:"reason"`
	} `json:"responseStatus"`
}

// Code is the answer's HTTP status, 0 when the event has none.
func (e AuditEvent) Code() int {
	if e.ResponseStatus == nil {
		return 0
	}
	return e.ResponseStatus.Code
}

// String names the request: "alice@example.com list leases in hotrod: 403".
func (e AuditEvent) String() string {
	what := e.RequestURI
	if r := e.ObjectRef; r != nil {
		what = r.Resource
		if r.Subresource != "" {
			what += "/" + r.Subresource
		}
		if r.APIGroup != "" {
			what += "." + r.APIGroup
		}
		if r.Name != "" {
			what += " " + r.Name
		}
		if r.Namespace != "" {
			what += " in " + r.Namespace
		}
	}
	s := fmt.Sprintf("%s %s %s: %d", e.User.Username, e.Verb, what, e.Code())
	if e.ResponseStatus != nil && e.ResponseStatus.Message != "" {
		s += " " + e.ResponseStatus.Message
	}
	return s
}

// AuditEvents reads the audit log: every request answered so far (the
// API server writes an event when it has answered).
func (c *ControlPlane) AuditEvents() ([]AuditEvent, error) {
	f, err := os.Open(c.AuditLog)
	if err != nil {
		return nil, fmt.Errorf("read the audit log: %w", err)
	}
	defer f.Close()
	var out []AuditEvent
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var e AuditEvent
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			// The last line may be half written.
			continue
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read the audit log %s: %w", c.AuditLog, err)
	}
	return out, nil
}

// Forbidden returns the requests of user the API server answered with 403.
func (c *ControlPlane) Forbidden(user string) ([]AuditEvent, error) {
	events, err := c.AuditEvents()
	if err != nil {
		return nil, err
	}
	var out []AuditEvent
	for _, e := range events {
		if e.User.Username == user && e.Code() == 403 {
			out = append(out, e)
		}
	}
	return out, nil
}
