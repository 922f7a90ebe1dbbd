package importer

import "strings"

// Emoji turns a reaction's short name (Slack, Mattermost: "thumbsup",
// "+1") into the emoji clients show, falling
// back to :name: for custom and unknown ones (skin tones dropped).
func Emoji(name string) string {
	base, _, _ := strings.Cut(name, "::")
	if e, ok := emoji[base]; ok {
		return e
	}
	return ":" + base + ":"
}

var emoji = map[string]string{
	"+1": "👍", "thumbsup": "👍", "-1": "👎", "thumbsdown": "👎", "heart": "❤️", "smile": "😄", "smiley": "😃",
	"grinning": "😀", "joy": "😂", "laughing": "😆", "slightly_smiling_face": "🙂", "wink": "😉", "tada": "🎉",
	"eyes": "👀", "white_check_mark": "✅", "heavy_check_mark": "✔️", "x": "❌", "pray": "🙏", "fire": "🔥",
	"rocket": "🚀", "clap": "👏", "raised_hands": "🙌", "ok_hand": "👌", "thinking_face": "🤔", "100": "💯",
	"wave": "👋", "sob": "😭", "cry": "😢", "star": "⭐", "warning": "⚠️", "muscle": "💪", "point_up": "☝️",
	"heart_eyes": "😍", "sweat_smile": "😅", "rolling_on_the_floor_laughing": "🤣", "coffee": "☕", "bulb": "💡",
}
