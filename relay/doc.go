// Package relay is the in-cluster end of an sbx sandbox: it accepts tunnel
// sessions from the laptop daemon, listens on the sandbox's inbound ports and
// dials cluster destinations for outbound streams under a dial policy.
//
// The command line (`sbx relay`, parsed by ParseArgs so the simulator starts
// relays from the same arguments as the Deployment):
//
//	sbx relay --sandbox alice --token-sha256 <hex> --listen 127.0.0.1:7000 \
//	  --health-listen :7001 --inbound 20001=route/8083/http --grace 10s --drain-timeout 20s
//
// The relay never holds the tunnel token: --token-sha256 is its SHA-256,
// which the daemon that minted the token wrote into the Deployment. A Hello
// is accepted when its token hashes to it (tunnel.TokenVerifier).
//
// Behaviour in brief:
//
//   - Sessions: one laptop per sandbox. Sessions with the same Hello
//     client id are pooled (streams go to the least busy); a session with
//     another client id and the right token replaces them, and the old
//     daemon is told why (tunnel.PeerClosedError).
//   - Inbound: each connection on an --inbound port becomes an inbound
//     stream {workload, port}. With no session it is held up to --grace
//     (at most --max-held at once); then HTTP ports (appProtocol http,
//     http2, grpc) answer 503 naming the sandbox and since when it is
//     offline, TCP ports close. A laptop that cannot reach its local
//     process makes HTTP ports answer 502 with the laptop's message.
//   - Stream cap: at most --max-streams inbound and outbound streams are
//     served at once (each may buffer ~1 MiB); beyond it HTTP ports
//     answer 503 saying so, TCP ports close and outbound streams are
//     refused with a reason that says how to raise the cap.
//   - Outbound: the target is resolved, every address is checked against
//     the policy (builtinDeny: 0.0.0.0/8, link-local 169.254.0.0/16 and
//     fe80::/10, the cloud metadata addresses outside them; loopback,
//     unspecified, multicast, --deny ranges, the pod's own addresses; an
//     IPv6 address also by the IPv4 address it embeds, see embeddedIPv4;
//     Teredo) and the checked address is dialed, so DNS cannot swap it.
//     Failures reach the daemon as a tunnel.DialError with a reason.
//   - Shutdown: when Run's context ends (SIGTERM), /readyz turns 503, the
//     tunnel listener closes and the laptop is told the relay drains (it
//     moves to the replacement pod). While the laptop is connected the
//     inbound ports keep accepting for --drain-delay (the mesh learns of
//     the pod's end asynchronously), then close; connections that have had
//     their answer are closed after a second of quiet, open streams get
//     the rest of --drain-timeout, then sessions are closed with a reason
//     and Run returns nil.
//   - Idle connections: when more than half of --max-streams are in use,
//     inbound connections that have had their answer and sent nothing for
//     --idle-timeout (default 2m, well under Envoy's 1h upstream idle
//     timeout) are closed, longest-idle first, until half are free; one
//     waiting for the laptop's answer is never idle. With slots to spare
//     nothing is closed: a response streaming with long gaps looks idle
//     too, and Istio keeps those open.
//   - Bench: `sbx bench cluster` measures through the relay (benchserve.go):
//     KindBench streams on the laptop's sessions and bare connections
//     after a Hello (bench), both authenticated by the token, get the
//     tunnel package's sink, source and echo (tunnel.ServeBench); nothing
//     else reaches them. At most 8 bench connections at once and 1 GiB
//     each; beyond either the request is refused saying so. They are not
//     counted in --max-streams.
//
// Metrics (on the registry in Deps, served at /metrics):
//
//	sbx_relay_sessions                      gauge    sessions of the current laptop
//	sbx_relay_handshakes_total{result}      counter  ok, bad_token, sandbox_mismatch, version_mismatch, timeout, error
//	sbx_relay_sessions_replaced_total       counter  sessions closed for a newer daemon
//	sbx_relay_streams_open{kind}            gauge    inbound, outbound
//	sbx_relay_streams_total{kind}           counter  streams established
//	sbx_relay_bytes_total{direction}        counter  to_laptop, from_laptop
//	sbx_relay_dial_errors_total{reason}     counter  denied, dns, refused, timeout, unreachable, other
//	sbx_relay_held_connections              gauge    inbound connections waiting for the laptop
//	sbx_relay_held_connections_total        counter
//	sbx_relay_http_answers_total{code}      counter  502, 503 written by the relay
//	sbx_relay_inbound_closed_total{reason}  counter  TCP connections closed undelivered
//	sbx_relay_streams_refused_total{kind}   counter  inbound, outbound streams refused at --max-streams
//	sbx_relay_idle_closed_total{reason}     counter  idle (--idle-timeout), drain: connections closed waiting for their caller
//	sbx_relay_ready                         gauge    1 while serving and not draining
//	sbx_relay_bench_total{result}           counter  bench connections: ok, refused (over a cap), error
//	sbx_relay_bench_bytes_total{direction}  counter  bench payload: to_laptop, from_laptop
package relay
