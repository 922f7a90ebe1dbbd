package test

import (
	"go/ast"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// sqlLiteral matches a string literal that is a SQL statement.
var sqlLiteral = regexp.MustCompile(`(?is)^[\x60"]\s*(SELECT\s|INSERT\s+INTO\s|UPDATE\s+\w+\s+SET\s|DELETE\s+FROM\s|CREATE\s+(TABLE|INDEX|UNIQUE\s+INDEX|VIRTUAL\s+TABLE)\s|ALTER\s+TABLE\s|DROP\s+(TABLE|INDEX)\s|WITH\s+\w+\s+AS\s*\()`)

// sqlOwners are the packages that may hold SQL: the store, and the media
// repository, whose sealed blobs and their wrapped keys are its own schema
// (see the package comment of mediaapi).
var sqlOwners = []string{"storage/", "mediaapi/"}

// TestArchitectureStorageEdge checks the storage edge a reviewer can
// count (README, "Contributing"): no SQL string outside the packages that
// own tables, and no code that type-switches a storage.Querier back to
// *DB or *Tx (it asks Querier.Store / Querier.Txn instead).
func TestArchitectureStorageEdge(t *testing.T) {
	files := moduleGoFiles(t)
	sqlSeen := 0
	for path, f := range files {
		owner := false
		for _, p := range sqlOwners {
			owner = owner || strings.HasPrefix(path, p)
		}
		inStorage := strings.HasPrefix(path, "storage/")
		storeType := func(e ast.Expr) bool {
			star, ok := e.(*ast.StarExpr)
			if !ok {
				return false
			}
			switch x := star.X.(type) {
			case *ast.SelectorExpr:
				id, ok := x.X.(*ast.Ident)
				return ok && id.Name == "storage" && (x.Sel.Name == "DB" || x.Sel.Name == "Tx")
			case *ast.Ident:
				return inStorage && (x.Name == "DB" || x.Name == "Tx")
			}
			return false
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch x := n.(type) {
			case *ast.BasicLit:
				if sqlLiteral.MatchString(x.Value) {
					sqlSeen++
					if !owner {
						t.Errorf("%s: SQL outside storage: %.60s", path, x.Value)
					}
				}
			case *ast.TypeAssertExpr:
				if x.Type != nil && storeType(x.Type) {
					t.Errorf("%s: type assertion of a Querier to a concrete store type: use Store()/Txn()", path)
				}
			case *ast.TypeSwitchStmt:
				for _, c := range x.Body.List {
					for _, e := range c.(*ast.CaseClause).List {
						if storeType(e) {
							t.Errorf("%s: type switch on a Querier: use Store()/Txn()", path)
						}
					}
				}
			}
			return true
		})
	}
	// The pattern must see the store's own SQL, or it proves nothing.
	if sqlSeen < 200 {
		t.Fatalf("found only %d SQL literals in the module: the pattern is not matching", sqlSeen)
	}
}

// TestArchitectureDocs: every package has a doc.go whose package comment
// says its job, what it may import and who calls it (README, "Contributing").
func TestArchitectureDocs(t *testing.T) {
	files := moduleGoFiles(t)
	dirs := map[string]bool{}
	for path := range files {
		dirs[filepath.Dir(path)] = true
	}
	for dir := range dirs {
		f := files[dir+"/doc.go"]
		if dir == "." {
			continue
		}
		if f == nil || f.Doc == nil {
			t.Errorf("%s: no doc.go with a package comment", dir)
			continue
		}
		text := strings.Join(strings.Fields(f.Doc.Text()), " ")
		if !strings.Contains(text, "Imports:") || !strings.Contains(text, "Called by:") {
			t.Errorf("%s/doc.go: the package comment must say what it imports (\"Imports:\") and who calls it (\"Called by:\")", dir)
		}
	}
	if len(dirs) < 20 {
		t.Fatalf("only %d package directories found", len(dirs))
	}
}
