package bench

import (
	"go.yaml.in/yaml/v3"

	"github.com/bothnia/bothnia/spec"
)

// specYAML round-trips a spec built in code through YAML, so that it gets
// the same defaults and validation as a file.
func specYAML(s *spec.Spec) ([]byte, error) { return yaml.Marshal(s) }
