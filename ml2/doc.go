// Package ml2 holds bothnia's Neutron ML2 mechanism driver: a small Python
// package (bothnia_ml2/, installed into neutron-server through the
// neutron.ml2.mechanism_drivers entry point; see pyproject.toml) and the
// tests that run it inside a real neutron-server (internal/devcloud),
// against a real lab of bothnia's agents. Install writes the driver where a
// neutron-server started by bothnia's own benchmark finds it.
package ml2
