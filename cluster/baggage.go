package cluster

import (
	"fmt"
	"regexp"
)

// ValidateBaggageKey checks that name is a W3C baggage key: an RFC 7230
// token (visible ASCII except separators).
func ValidateBaggageKey(name string) error {
	if name == "" {
		return fmt.Errorf("baggage key must not be empty (default %q)", DefaultBaggageKey)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c <= ' ' || c >= 0x7f || isSeparator(c) {
			return fmt.Errorf("baggage key %q has %q at position %d: a baggage key is an HTTP token (letters, digits and !#$%%&'*+-.^_`|~)", name, c, i+1)
		}
	}
	return nil
}

func isSeparator(c byte) bool {
	switch c {
	case '(', ')', '<', '>', '@', ',', ';', ':', '\\', '"', '/', '[', ']', '?', '=', '{', '}':
		return true
	}
	return false
}

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
	if err := ValidateBaggageKey(baggageKey); err != nil {
		return "", err
	}
	if err := ValidateRoutingKey(routingKey); err != nil {
		return "", err
	}
	const ows = `[ \t]*`
	return `^(?:(?:.*,)?` + ows + regexp.QuoteMeta(baggageKey) + ows + `=` + ows +
		routingKey + ows + `(?:[;,].*)?)$`, nil
}
