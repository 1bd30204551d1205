package bootstrap

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/isolator-dev/isolator/bootstrap/internal/atomicfile"
)

// DefaultStateDir is where isolator keeps its state on the node (a host path).
const DefaultStateDir = "/var/lib/isolator"

const stateFile = "state.json"

// State is what isolator remembers on the node between runs, so that a crash at any
// step converges on the next run and uninstall knows exactly what to take back. It is
// written atomically before each change it describes.
type State struct {
	// MainConfig is the main config (or k3s/rke2 template) isolator edited.
	MainConfig string `json:"mainConfig,omitempty"`
	Template   bool   `json:"template,omitempty"`
	// ImportEntry is the imports entry isolator added to MainConfig ("" when an admin
	// glob already loaded the drop-in).
	ImportEntry string `json:"importEntry,omitempty"`
	// CreatedMain is true when isolator created MainConfig because there was none.
	CreatedMain bool `json:"createdMain,omitempty"`
	// DropIn is the path of isolator's drop-in; CreatedDropInDir is true when isolator
	// created its directory (uninstall removes it again when empty).
	DropIn           string `json:"dropIn,omitempty"`
	CreatedDropInDir bool   `json:"createdDropInDir,omitempty"`
	// ArtifactsDir and ArtifactsDigest identify the active Kata version and its manifest.
	ArtifactsDir    string `json:"artifactsDir,omitempty"`
	ArtifactsDigest string `json:"artifactsDigest,omitempty"`
	// Pending describes the config before the change being installed, for rollback; it is
	// cleared once containerd serves the kata handler.
	Pending *Pending `json:"pending,omitempty"`
	// Installed is true once containerd was verified to serve the kata handler.
	Installed bool `json:"installed,omitempty"`
}

// Pending is the node's config before an install that is not yet verified.
type Pending struct {
	// DropIn is the previous drop-in's content; DropInExisted false means there was none.
	DropIn        []byte `json:"dropIn,omitempty"`
	DropInExisted bool   `json:"dropInExisted,omitempty"`
	// ImportAdded is true when this install added the imports entry; MainCreated when it
	// created the main config. Rollback takes back exactly these.
	ImportAdded bool `json:"importAdded,omitempty"`
	MainCreated bool `json:"mainCreated,omitempty"`
}

func loadState(dir string) (*State, error) {
	data, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return &State{}, nil
	}
	if err != nil {
		return nil, err
	}
	var st State
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("%s: %w (delete it only if no isolator install is on this node)", filepath.Join(dir, stateFile), err)
	}
	return &st, nil
}

func saveState(dir string, st *State) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(dir, stateFile), append(data, '\n'), 0o600)
}

func removeState(dir string) error {
	if err := atomicfile.Remove(filepath.Join(dir, stateFile)); err != nil {
		return err
	}
	// The directory is isolator's; leave nothing behind when it is empty.
	if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		var pe *fs.PathError
		if !errors.As(err, &pe) {
			return err
		}
	}
	return nil
}
