package api

// Host is the Host the Go client sends. curl --unix-socket sends
// "localhost"; the daemon refuses anything else, which means the request
// did not come from a local client speaking to the socket (DNS rebinding,
// a proxied browser).
const Host = "local.sbx"
