package proxy

import (
	"net/http"
	"strings"
)

// InjectBaggage adds the member key=value to h's W3C baggage unless some
// member already has that key (whatever its value: a request that names
// another sandbox, or the baseline with an empty value, is left as the
// caller meant it). Members are appended to the existing header rather
// than in a second header line, which some servers read only the first of.
// It reports whether it changed h.
//
// W3C baggage: members are separated by "," with optional whitespace; a
// member is key OWS "=" OWS value, optionally followed by ";" properties.
// Several baggage header lines are one list joined with ",".
func InjectBaggage(h http.Header, key, value string) bool {
	if key == "" || value == "" {
		return false
	}
	lines := h.Values("Baggage")
	for _, line := range lines {
		if hasBaggageKey(line, key) {
			return false
		}
	}
	member := key + "=" + value
	var nonEmpty []string
	for _, line := range lines {
		if strings.TrimSpace(line) != "" {
			nonEmpty = append(nonEmpty, strings.TrimSpace(line))
		}
	}
	h.Set("Baggage", strings.Join(append(nonEmpty, member), ","))
	return true
}

// hasBaggageKey reports whether a baggage header value has a member with
// exactly this key (keys are case sensitive tokens).
func hasBaggageKey(line, key string) bool {
	for _, m := range strings.Split(line, ",") {
		k, _, found := strings.Cut(m, "=")
		if !found {
			continue
		}
		if strings.TrimSpace(k) == key {
			return true
		}
	}
	return false
}
