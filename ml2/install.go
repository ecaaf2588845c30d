package ml2

import (
	"embed"
	"os"
	"path/filepath"
)

// The driver's Python, carried in the bothnia binary so that its
// benchmark can load it into a neutron-server it starts.
//
//go:embed bothnia_ml2/*.py
var driver embed.FS

// Install puts the driver where a neutron-server with dir first on its
// Python path finds it, entry point included, as pip install would: the
// package and a dist-info naming neutron.ml2.mechanism_drivers = bothnia.
// On a real neutron-server host use pip (docs/openstack.md).
func Install(dir string) error {
	pkg := filepath.Join(dir, "bothnia_ml2")
	info := filepath.Join(dir, "bothnia_ml2-0.1.0.dist-info")
	for _, d := range []string{pkg, info} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	files, err := driver.ReadDir("bothnia_ml2")
	if err != nil {
		return err
	}
	for _, f := range files {
		b, err := driver.ReadFile("bothnia_ml2/" + f.Name())
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(pkg, f.Name()), b, 0o644); err != nil {
			return err
		}
	}
	for f, c := range map[string]string{
		"METADATA":         "Metadata-Version: 2.1\nName: bothnia-ml2\nVersion: 0.1.0\n",
		"entry_points.txt": "[neutron.ml2.mechanism_drivers]\nbothnia = bothnia_ml2.driver:BothniaMechanismDriver\n",
		"top_level.txt":    "bothnia_ml2\n",
	} {
		if err := os.WriteFile(filepath.Join(info, f), []byte(c), 0o644); err != nil {
			return err
		}
	}
	return nil
}
