package cluster

import (
	"regexp"

	"github.com/sbx-dev/sbx/cluster/routingkey"
)

// BaggageRegex returns the RE2 expression that matches a whole `baggage`
// header value carrying the list member baggageKey=routingKey. It is
// anchored (^(?:…)$): Envoy's safe_regex matches the whole value anyway,
// but Linkerd's proxy searches for the leftmost match, where an
// unanchored expression would match keys that merely contain ours.
//
// W3C baggage: list-member = key OWS "=" OWS value *( OWS ";" OWS property ),
// members separated by OWS "," OWS; Envoy joins repeated headers with ",".
// So the member starts the value or follows a comma (never a ";", which
// would make it a property, and never other key characters, which would make
// it a longer key such as "my-sbx-routing-key"), and the value ends at OWS
// followed by ";", "," or the end (so a key that merely starts with k does
// not match).
func BaggageRegex(baggageKey, routingKey string) (string, error) {
	if err := routingkey.ValidateBaggageKey(baggageKey); err != nil {
		return "", err
	}
	if err := routingkey.Validate(routingKey); err != nil {
		return "", err
	}
	const ows = `[ \t]*`
	return `^(?:(?:.*,)?` + ows + regexp.QuoteMeta(baggageKey) + ows + `=` + ows +
		routingKey + ows + `(?:[;,].*)?)$`, nil
}
