<?php
// Search suggestions as JSON for the search box (new in 5.1).
$q = trim((string) ($_GET['q'] ?? ''));
header('Content-Type: application/json');
if (mb_strlen($q) < 2) {
    echo '[]';
    return;
}
$stmt = acme_db()->prepare('SELECT title FROM pages WHERE title LIKE ? ORDER BY title LIMIT 8');
$stmt->execute([$q . '%']);
echo json_encode($stmt->fetchAll(PDO::FETCH_COLUMN));
